// A process-wide pool of std::thread workers for the CPU layout kernels. Plain C++17.
// Work is claimed dynamically, item by item, by the calling thread and by whichever workers
// are awake: a worker that wakes late (waking a sleeping thread costs 0.1-1 ms on virtual
// machines, or it may be competing with torch's own OpenMP threads for the cores) just finds
// fewer items left, so a parallel run is never much slower than running it on the caller alone.
#pragma once
#include <cstdint>
#include <functional>

namespace galvatron {
namespace comm {

// Runs fn(0) .. fn(num_items - 1), each exactly once, on the calling thread and on up to
// num_threads - 1 pool workers (created on first use, kept for the life of the process), and
// returns when all have finished. Concurrent calls from several threads are safe (they share
// the workers). After fork() the child starts a fresh pool. fn must not throw. Idle workers
// sleep on a condition variable at once (kSpinMicros = 0): spinning workers were measured to
// stall torch's OpenMP threads on the same cores by whole scheduler ticks (4-24 ms).
void parallel_for(int64_t num_items, int num_threads, const std::function<void(int64_t)>& fn);

constexpr int64_t kSpinMicros = 0;

}  // namespace comm
}  // namespace galvatron

// A process-wide pool of std::thread workers for the CPU layout kernels: starting threads per
// call costs ~50-100 us, which is as much as copying a few MiB. Plain C++17.
#pragma once
#include <functional>

namespace galvatron {
namespace comm {

// Runs fn(0) .. fn(num_tasks - 1) concurrently, fn(0) on the calling thread and the others on
// pool workers (created on first use, kept for the life of the process), and returns when all
// have finished. Calls from different threads are serialised. After fork() the child starts a
// fresh pool (the parent's workers do not exist there). fn must not throw. Idle workers spin
// for about a millisecond before sleeping. num_tasks must be < 65536 (std::invalid_argument).
void parallel_run(int num_tasks, const std::function<void(int)>& fn);

}  // namespace comm
}  // namespace galvatron

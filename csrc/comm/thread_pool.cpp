#include "comm/thread_pool.h"

#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <mutex>
#include <thread>
#include <vector>

namespace galvatron {
namespace comm {
namespace {

inline void cpu_relax() {
#if defined(__x86_64__) || defined(__i386__)
  __builtin_ia32_pause();
#elif defined(__aarch64__)
  __asm__ __volatile__("yield");
#endif
}

// Short busy wait, then yield the core (the thread we wait for may need it).
template <typename Pred>
void wait_until(Pred done) {
  for (int spins = 0; !done(); ++spins) {
    if (spins < 64) {
      cpu_relax();
    } else {
      std::this_thread::yield();
    }
  }
}

// One parallel_for call; lives on the caller's stack until no worker can touch it.
struct Job {
  const std::function<void(int64_t)>* fn;
  int64_t num_items;
  int max_helpers;  // workers allowed to join (num_threads - 1)
  std::atomic<int64_t> next{0};
  std::atomic<int64_t> done{0};
  std::atomic<int> helpers{0};

  void work() {
    for (int64_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < num_items;) {
      (*fn)(i);
      done.fetch_add(1, std::memory_order_release);
    }
  }
};

class Pool {
 public:
  void run(Job& job) {
    grow(job.max_helpers);
    {
      std::lock_guard<std::mutex> lock(mutex_);  // publish under the sleepers' mutex
      job_.store(&job, std::memory_order_seq_cst);
      generation_.fetch_add(1, std::memory_order_seq_cst);
    }
    wake_.notify_all();
    job.work();
    wait_until([&] { return job.done.load(std::memory_order_acquire) == job.num_items; });
    // Unpublish, then wait until no worker still holds a pointer to this job.
    Job* expected = &job;
    job_.compare_exchange_strong(expected, nullptr, std::memory_order_seq_cst);
    wait_until([&] { return active_.load(std::memory_order_seq_cst) == 0; });
  }

 private:
  void grow(int num_workers) {
    std::lock_guard<std::mutex> lock(grow_mutex_);
    while (static_cast<int>(workers_.size()) < num_workers) {
      workers_.emplace_back([this] { loop(); });
      workers_.back().detach();
    }
  }

  void loop() {
    uint64_t seen = 0;
    for (;;) {
      seen = wait_for_new_generation(seen);
      active_.fetch_add(1, std::memory_order_seq_cst);
      Job* job = job_.load(std::memory_order_seq_cst);  // null, or a job whose caller waits for us
      if (job != nullptr &&
          job->helpers.fetch_add(1, std::memory_order_relaxed) < job->max_helpers) {
        job->work();
      }
      active_.fetch_sub(1, std::memory_order_seq_cst);
    }
  }

  uint64_t wait_for_new_generation(uint64_t seen) {
    if (kSpinMicros > 0) {  // optional bounded spin (yielding) before sleeping
      const auto deadline =
          std::chrono::steady_clock::now() + std::chrono::microseconds(kSpinMicros);
      for (int spins = 0;; ++spins) {
        const uint64_t g = generation_.load(std::memory_order_acquire);
        if (g != seen) return g;
        if ((spins & 15) == 15 && std::chrono::steady_clock::now() > deadline) break;
        std::this_thread::yield();
      }
    }
    std::unique_lock<std::mutex> lock(mutex_);
    wake_.wait(lock, [&] { return generation_.load(std::memory_order_acquire) != seen; });
    return generation_.load(std::memory_order_acquire);
  }

  std::mutex grow_mutex_;
  std::mutex mutex_;  // pairs with wake_
  std::condition_variable wake_;
  std::vector<std::thread> workers_;
  std::atomic<uint64_t> generation_{0};
  std::atomic<Job*> job_{nullptr};
  std::atomic<int> active_{0};
};

Pool* pool_for_this_process() {
  // Never destroyed (workers may still wait on it at exit); replaced, leaked, after a fork.
  static Pool* pool = nullptr;
  static pid_t owner = 0;
  static std::mutex create_mutex;
  std::lock_guard<std::mutex> lock(create_mutex);
  if (pool == nullptr || owner != getpid()) {
    pool = new Pool();
    owner = getpid();
  }
  return pool;
}

}  // namespace

void parallel_for(int64_t num_items, int num_threads, const std::function<void(int64_t)>& fn) {
  if (num_threads <= 1 || num_items <= 1) {
    for (int64_t i = 0; i < num_items; ++i) fn(i);
    return;
  }
  Job job;
  job.fn = &fn;
  job.num_items = num_items;
  job.max_helpers = num_threads - 1;
  pool_for_this_process()->run(job);
}

}  // namespace comm
}  // namespace galvatron

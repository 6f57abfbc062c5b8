// A fixed pool of worker threads with a blocking parallel_for. The calling thread takes
// part in the work, so a pool of N threads uses N-1 workers plus the caller.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <functional>
#include <mutex>
#include <thread>
#include <vector>

namespace sinkrouter {

class ThreadPool {
 public:
  // num_threads <= 0: std::thread::hardware_concurrency().
  explicit ThreadPool(int num_threads = 0);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int size() const { return num_threads_; }

  // Runs fn(i) for every i in [0, n), spread over the threads; returns when all are done.
  // The first exception thrown by fn is rethrown here after the others finish.
  void parallel_for(int64_t n, const std::function<void(int64_t)>& fn);

  // The process-wide pool (size from SINKROUTER_THREADS, else hardware concurrency).
  static ThreadPool& global();

 private:
  void worker_loop();
  void run_items();

  int num_threads_ = 1;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  const std::function<void(int64_t)>* job_ = nullptr;
  int64_t job_size_ = 0;
  int64_t next_item_ = 0;
  int busy_workers_ = 0;
  uint64_t generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
  std::mutex run_mutex_;  // one parallel_for at a time
};

}  // namespace sinkrouter

// OpenMP where the compiler has it (-fopenmp); otherwise the kernels run on one thread: the
// `#pragma omp` lines are ignored and these two stand in for the runtime (Apple clang has no OpenMP).
#pragma once
#ifdef _OPENMP
#include <omp.h>
#else
inline int omp_get_max_threads() { return 1; }
inline int omp_get_thread_num() { return 0; }
#endif

/* Native CPU kernels of the adder layer, called from pkkd_lightning/ops/native_backend.py through ctypes.
 * Plain C99 with GCC/Clang vector extensions, so it builds in about a second with the system compiler; threads
 * come from OpenMP when the compiler supports it (see parallel_for) and from pthreads otherwise. Work items
 * (image x filter block, or image x channel) are split evenly over threads; no two threads write the same output
 * element.
 */
#include <pthread.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#define OB 8
#define VBYTES 32

#if defined(__AVX__)
#include <immintrin.h>
#define VMIN_f32(a, b) _mm256_min_ps((__m256)(a), (__m256)(b))
#define VMAX_f32(a, b) _mm256_max_ps((__m256)(a), (__m256)(b))
#define VMIN_f64(a, b) _mm256_min_pd((__m256d)(a), (__m256d)(b))
#define VMAX_f64(a, b) _mm256_max_pd((__m256d)(a), (__m256d)(b))
#endif

typedef struct {
    const void *x, *w, *g;
    void *out;
    long N, C, H, W; /* padded input */
    long O, KH, KW, SH, SW, DH, DW, HO, WO;
} AdderArgs;

#define T float
#define TI int
#define SUF f32
#include "adder_kernels.inc"
#undef T
#undef TI
#undef SUF
#define T double
#define TI long long
#define SUF f64
#include "adder_kernels.inc"
#undef T
#undef TI
#undef SUF

typedef void (*RangeFn)(const AdderArgs *, long, long);

#ifdef _OPENMP
/* Built with -fopenmp, the library binds to the libgomp that PyTorch already loaded (same soname), so the kernels
 * run on PyTorch's own OpenMP thread pool: no second pool competing with PyTorch's spinning workers for cores. */
static void parallel_for(RangeFn fn, const AdderArgs *args, long items, int threads) {
    if (threads > items) threads = (int)items;
    if (threads <= 1) {
        fn(args, 0, items);
        return;
    }
#pragma omp parallel num_threads(threads)
    {
        const long t = omp_get_thread_num(), n = omp_get_num_threads();
        fn(args, items * t / n, items * (t + 1) / n);
    }
}
#else
typedef struct {
    RangeFn fn;
    const AdderArgs *args;
    long begin, end;
} Job;

static void *run_job(void *p) {
    Job *job = (Job *)p;
    job->fn(job->args, job->begin, job->end);
    return 0;
}

static void parallel_for(RangeFn fn, const AdderArgs *args, long items, int threads) {
    if (threads > 64) threads = 64;
    if (threads > items) threads = (int)items;
    if (threads <= 1) {
        fn(args, 0, items);
        return;
    }
    pthread_t tids[64];
    Job jobs[64];
    for (int t = 0; t < threads; ++t) {
        jobs[t] = (Job){fn, args, items * t / threads, items * (t + 1) / threads};
        if (t > 0) pthread_create(&tids[t], 0, run_job, &jobs[t]);
    }
    run_job(&jobs[0]);
    for (int t = 1; t < threads; ++t) pthread_join(tids[t], 0);
}
#endif

int adder_filter_block(void) { return OB; }

void adder_forward(const AdderArgs *args, int is_double, int threads) {
    const long items = args->N * ((args->O + OB - 1) / OB);
    parallel_for(is_double ? fwd_range_f64 : fwd_range_f32, args, items, threads);
}

void adder_input_grad(const AdderArgs *args, int is_double, int threads) {
    parallel_for(is_double ? igrad_range_f64 : igrad_range_f32, args, args->N * args->C, threads);
}

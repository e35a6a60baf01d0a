/* Native CPU kernels of the adder layer, called from pkkd_lightning/ops/native_backend.py through ctypes.
 * Plain C99 with GCC/Clang vector extensions, so it builds in about a second with the system compiler. The vector
 * width is the widest the build target has (-march: 512-bit with AVX-512, 256 with AVX, 128 otherwise, e.g. SSE2 or
 * NEON); -DVBYTES=<bytes> overrides it (a width the target lacks is emulated by the compiler, which the tests use to
 * check the 512-bit code on any machine). Threads come from OpenMP when the compiler supports it (see
 * parallel_for) and from pthreads otherwise. Work items are split evenly over threads; no two threads write the
 * same output element.
 */
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#ifndef VBYTES
#if defined(__AVX512F__)
#define VBYTES 64
#elif defined(__AVX__)
#define VBYTES 32
#else
#define VBYTES 16
#endif
#endif

/* Register tiles: the forward keeps FWD_P output positions x FWD_NV vectors of filters (plus the filters and one
 * broadcast input), the input gradient IGRAD_CB vectors of channels and their inputs: at most the 16 vector
 * registers of AVX2, or the 32 of AVX-512. */
#ifndef FWD_P
#if defined(__AVX512F__)
#define FWD_P 12
#else
#define FWD_P 6
#endif
#endif
#ifndef FWD_NV
#define FWD_NV 2
#endif
#ifndef FWD_SUM_BLOCK
#define FWD_SUM_BLOCK 32
#endif
#ifndef IGRAD_CB
#define IGRAD_CB 4
#endif

#if defined(__AVX512F__) && VBYTES == 64
#include <immintrin.h>
#define HAS_NATIVE_WIDTH 1
#define VMIN_f32(a, b) _mm512_min_ps((__m512)(a), (__m512)(b))
#define VMAX_f32(a, b) _mm512_max_ps((__m512)(a), (__m512)(b))
#define VMIN_f64(a, b) _mm512_min_pd((__m512d)(a), (__m512d)(b))
#define VMAX_f64(a, b) _mm512_max_pd((__m512d)(a), (__m512d)(b))
#define VSET1_f32 _mm512_set1_ps
#define VSET1_f64 _mm512_set1_pd
#elif defined(__AVX__) && VBYTES == 32
#include <immintrin.h>
#define HAS_NATIVE_WIDTH 1
#define VMIN_f32(a, b) _mm256_min_ps((__m256)(a), (__m256)(b))
#define VMAX_f32(a, b) _mm256_max_ps((__m256)(a), (__m256)(b))
#define VMIN_f64(a, b) _mm256_min_pd((__m256d)(a), (__m256d)(b))
#define VMAX_f64(a, b) _mm256_max_pd((__m256d)(a), (__m256d)(b))
#define VSET1_f32 _mm256_set1_ps
#define VSET1_f64 _mm256_set1_pd
#elif defined(__SSE2__) && VBYTES == 16
#include <immintrin.h>
#define HAS_NATIVE_WIDTH 1
#define VMIN_f32(a, b) _mm_min_ps((__m128)(a), (__m128)(b))
#define VMAX_f32(a, b) _mm_max_ps((__m128)(a), (__m128)(b))
#define VMIN_f64(a, b) _mm_min_pd((__m128d)(a), (__m128d)(b))
#define VMAX_f64(a, b) _mm_max_pd((__m128d)(a), (__m128d)(b))
#define VSET1_f32 _mm_set1_ps
#define VSET1_f64 _mm_set1_pd
#elif defined(__aarch64__) && defined(__ARM_NEON) && VBYTES == 16
#include <arm_neon.h>
#define HAS_NATIVE_WIDTH 1
#define VMIN_f32(a, b) vminq_f32((float32x4_t)(a), (float32x4_t)(b))
#define VMAX_f32(a, b) vmaxq_f32((float32x4_t)(a), (float32x4_t)(b))
#define VMIN_f64(a, b) vminq_f64((float64x2_t)(a), (float64x2_t)(b))
#define VMAX_f64(a, b) vmaxq_f64((float64x2_t)(a), (float64x2_t)(b))
#define VSET1_f32 vdupq_n_f32
#define VSET1_f64 vdupq_n_f64
#else
#define HAS_NATIVE_WIDTH 0
#endif

typedef struct {
    const void *x, *w, *g, *sx, *sf;
    void *out;
    long N, C, H, W; /* forward: the padded input; input gradient: C = g * Cg */
    long O, G, KH, KW, SH, SW, DH, DW, HO, WO;
    long NV;             /* forward: vectors of filters per block (1 or FWD_NV) */
    long XH, XW, PH, PW; /* input gradient: the unpadded input's size and the padding */
    long CP;             /* input gradient: channels per group rounded up to a vector */
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

/* The vector width in bytes, and the forward's widest filter block in vectors: the Python side packs to them. */
int adder_vector_bytes(void) { return VBYTES; }
int adder_forward_block_vectors(void) { return FWD_NV; }

void adder_forward(const AdderArgs *args, int is_double, int threads) {
    const long lanes = VBYTES / (is_double ? sizeof(double) : sizeof(float)), block = args->NV * lanes;
    const long items = args->N * args->G * ((args->O / args->G + block - 1) / block);
    parallel_for(is_double ? fwd_range_f64 : fwd_range_f32, args, items, threads);
}

void adder_input_grad(const AdderArgs *args, int is_double, int threads) {
    parallel_for(is_double ? igrad_range_f64 : igrad_range_f32, args, args->N * args->XH, threads);
}

void adder_depthwise_forward(const AdderArgs *args, int is_double, int threads) {
    parallel_for(is_double ? dw_fwd_range_f64 : dw_fwd_range_f32, args, args->N * args->HO, threads);
}

void adder_depthwise_input_grad(const AdderArgs *args, int is_double, int threads) {
    parallel_for(is_double ? dw_igrad_range_f64 : dw_igrad_range_f32, args, args->N * args->XH, threads);
}

/* Measures the double-precision FMA peak of one core: ten independent chains of 256-bit
 * fused multiply-adds, timed by the process CPU time so that other load on the machine does
 * not lower the figure. Each FMA on 4 doubles counts as 8 floating-point operations.
 *
 * Build and run: gcc -O2 -mavx2 -mfma bench/peak_fma.c -o /tmp/peak_fma && taskset -c 0 /tmp/peak_fma
 */
#include <immintrin.h>
#include <stdio.h>
#include <sys/resource.h>

static double cpu_seconds(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return usage.ru_utime.tv_sec + 1e-6 * usage.ru_utime.tv_usec;
}

int main(void) {
    __m256d a0 = _mm256_set1_pd(0.1), a1 = _mm256_set1_pd(0.2), a2 = _mm256_set1_pd(0.3);
    __m256d a3 = _mm256_set1_pd(0.4), a4 = _mm256_set1_pd(0.5), a5 = _mm256_set1_pd(0.6);
    __m256d a6 = _mm256_set1_pd(0.7), a7 = _mm256_set1_pd(0.8), a8 = _mm256_set1_pd(0.9);
    __m256d a9 = _mm256_set1_pd(1.0);
    const __m256d x = _mm256_set1_pd(0.999999), y = _mm256_set1_pd(1e-7);
    const long iterations = 300000000;

    double start = cpu_seconds();
    for (long k = 0; k < iterations; k++) {
        a0 = _mm256_fmadd_pd(a0, x, y);
        a1 = _mm256_fmadd_pd(a1, x, y);
        a2 = _mm256_fmadd_pd(a2, x, y);
        a3 = _mm256_fmadd_pd(a3, x, y);
        a4 = _mm256_fmadd_pd(a4, x, y);
        a5 = _mm256_fmadd_pd(a5, x, y);
        a6 = _mm256_fmadd_pd(a6, x, y);
        a7 = _mm256_fmadd_pd(a7, x, y);
        a8 = _mm256_fmadd_pd(a8, x, y);
        a9 = _mm256_fmadd_pd(a9, x, y);
    }
    double seconds = cpu_seconds() - start;

    /* Use every chain so the compiler keeps them all. */
    __m256d sum = _mm256_add_pd(_mm256_add_pd(_mm256_add_pd(a0, a1), _mm256_add_pd(a2, a3)),
                                _mm256_add_pd(_mm256_add_pd(a4, a5), _mm256_add_pd(a6, a7)));
    sum = _mm256_add_pd(sum, _mm256_add_pd(a8, a9));
    double lanes[4];
    _mm256_storeu_pd(lanes, sum);
    printf("%.1f GFLOP/s per CPU second (checksum %g)\n",
           iterations * 10.0 * 4 * 2 / seconds / 1e9, lanes[0]);
    return 0;
}

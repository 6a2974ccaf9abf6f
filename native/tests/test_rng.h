/*
 * test_rng.h — the seeded generator both test drivers draw their inputs from (a 64-bit LCG,
 * high bits out), so a seed names the same inputs in each.
 */
#ifndef RSLOC_TEST_RNG_H
#define RSLOC_TEST_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t state;
} rng;

static inline uint32_t next_u32(rng *r)
{
    r->state = r->state * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(r->state >> 33);
}

static inline double next_unit(rng *r)
{
    return next_u32(r) / 4294967296.0;
}

#endif /* RSLOC_TEST_RNG_H */

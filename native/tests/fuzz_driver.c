/*
 * fuzz_driver.c — random calls into the public API of rsloc_cliques (random sizes, NaN/inf,
 * out-of-range ids and parameters, NULL and short error buffers) for a fixed seed and a time
 * bound, under AddressSanitizer and UBSan (tests/test_native.py builds and runs it). Every call
 * must return a documented status; a successful result must be well formed; every result is
 * freed. Usage: fuzz_driver <seed> <seconds>. Exit status 0 = all good.
 */
#include "rsloc_cliques.h"
#include "test_rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_NODES 400
#define MAX_EDGES 4000

/* An integer in [lo, hi]. */
static int64_t next_int(rng *r, int64_t lo, int64_t hi)
{
    return lo + (int64_t)(next_unit(r) * (double)(hi - lo + 1));
}

/* A double that is usually ordinary and sometimes NaN, ±inf, huge or negative. */
static double next_wild(rng *r, double lo, double hi)
{
    switch (next_u32(r) % 16) {
    case 0:
        return NAN;
    case 1:
        return INFINITY;
    case 2:
        return -INFINITY;
    case 3:
        return -1e300;
    case 4:
        return 1e300;
    default:
        return lo + next_unit(r) * (hi - lo);
    }
}

static int documented(int code)
{
    return code == RSLOC_OK || code == RSLOC_EINVAL || code == RSLOC_ENOMEM ||
           code == RSLOC_ELIMIT;
}

/* One fault per call at most: the index of the input made wrong (NaN/inf, out of range, NULL),
 * or -1 for a valid call; a quarter of the calls carry one. */
static int pick_fault(rng *r, int n_faults)
{
    return next_u32(r) % 4 ? -1 : (int)(next_u32(r) % (uint32_t)n_faults);
}

static int fuzz_maximal(rng *r, int32_t *edges, char *err, long *codes)
{
    rsloc_clique_params params;
    rsloc_clique_set set;
    int fault = pick_fault(r, 9);
    int32_t n = fault == 0 ? (int32_t)next_int(r, -3, 0) : (int32_t)next_int(r, 1, MAX_NODES);
    int64_t m = fault == 1 ? -1 : next_int(r, 0, MAX_EDGES), k, c;
    int code, ok = 1;
    for (k = 0; k < 2 * (m > 0 ? m : 0); k++)
        edges[k] = (int32_t)next_int(r, 0, n - 1);
    if (fault == 2 && m > 0)
        edges[next_int(r, 0, 2 * m - 1)] = next_u32(r) % 2 ? -1 : n;
    rsloc_clique_params_default(&params);
    params.min_size = fault == 3 ? 0 : (int32_t)next_int(r, 1, 6);
    params.min_ratio = fault == 4 ? next_wild(r, 1.5, 9.0) : next_unit(r);
    params.max_cliques = fault == 5 ? 0 : next_int(r, 1, 5000);
    params.max_steps = fault == 6 ? 0 : next_int(r, 1, 200000);
    memset(&set, 0, sizeof set);
    code = rsloc_maximal_cliques(n, m, fault == 7 && m > 0 ? NULL : edges,
                                 next_u32(r) % 4 ? &params : NULL, &set,
                                 fault == 8 ? NULL : err, (size_t)next_int(r, 0, 64));
    if (!documented(code))
        return 0;
    codes[code]++;
    if (code == RSLOC_OK) {
        if (set.n_cliques < 0 || (set.n_cliques > 0 && (!set.offsets || !set.members)))
            ok = 0;
        for (c = 0; ok && c < set.n_cliques; c++) {
            if (set.offsets[c + 1] <= set.offsets[c])
                ok = 0;
            for (k = set.offsets[c]; ok && k < set.offsets[c + 1]; k++)
                if (set.members[k] < 0 || set.members[k] >= n ||
                    (k > set.offsets[c] && set.members[k] <= set.members[k - 1]))
                    ok = 0;
        }
    } else if (set.n_cliques != 0 || set.offsets || set.members) {
        ok = 0; /* on error the output is left zeroed */
    }
    rsloc_clique_set_free(&set);
    return ok;
}

static int fuzz_geo(rng *r, int32_t *patch, double *xy, float *score, char *err, long *codes)
{
    rsloc_geo_params params;
    rsloc_geo_result res;
    rsloc_hits hits;
    int fault = pick_fault(r, 12);
    int32_t n = fault == 0 ? -1 : (int32_t)next_int(r, 0, MAX_NODES), i;
    int32_t patches = (int32_t)next_int(r, 1, 40);
    int code, ok = 1;
    double *px = xy, *py = xy + MAX_NODES, *lon = xy + 2 * MAX_NODES, *lat = xy + 3 * MAX_NODES;
    for (i = 0; i < n; i++) {
        patch[i] = (int32_t)next_int(r, 0, patches - 1);
        px[i] = (patch[i] % 8) * 500.0 + next_unit(r) * 20.0;
        py[i] = (patch[i] / 8) * 500.0 + next_unit(r) * 20.0;
        lon[i] = 2.0 + next_unit(r) * 0.1;
        lat[i] = 47.0 + next_unit(r) * 0.1;
        score[i] = (float)next_unit(r);
    }
    if (n > 0 && fault >= 1 && fault <= 5) {
        int32_t at = (int32_t)next_int(r, 0, n - 1);
        double bad = next_wild(r, 1e301, 1e302); /* NaN, ±inf or huge */
        if (fault == 1)
            patch[at] = -1;
        else if (fault == 2)
            px[at] = bad;
        else if (fault == 3)
            lon[at] = next_u32(r) % 2 ? bad : 181.0;
        else if (fault == 4)
            lat[at] = next_u32(r) % 2 ? bad : -91.0;
        else
            score[at] = (float)bad;
    }
    hits.n = n;
    hits.patch = fault == 6 ? NULL : patch;
    hits.px = px;
    hits.py = py;
    hits.lon = lon;
    hits.lat = lat;
    hits.score = fault == 7 ? NULL : score;
    hits.gsd_x = fault == 8 ? next_wild(r, -5.0, 0.0) : 2.0 + next_unit(r) * 8.0;
    hits.gsd_y = 2.0 + next_unit(r) * 8.0;
    rsloc_geo_params_default(&params);
    params.tolerance_m = fault == 9 ? next_wild(r, -100.0, 0.0) : 50.0 + next_unit(r) * 3000.0;
    params.min_clique_size = fault == 10 ? 1 : (int32_t)next_int(r, 2, 6);
    params.top_n = (int32_t)next_int(r, 1, 300);
    params.keep_ratio = next_unit(r);
    params.max_cliques = next_int(r, 1, 10000);
    params.max_search_steps = next_int(r, 1, 500000);
    params.max_pair_checks = fault == 11 ? next_int(r, 1, 10) : 1000000;
    memset(&res, 0, sizeof res);
    code = rsloc_geo_cliques(&hits, next_u32(r) % 4 ? &params : NULL, &res, err,
                             (size_t)next_int(r, 0, 64));
    if (!documented(code))
        return 0;
    codes[4 + code]++;
    if (code == RSLOC_OK) {
        for (i = 0; ok && i < res.n_kept; i++)
            if (res.clique_group[i] < 0 || res.clique_group[i] >= res.n_groups)
                ok = 0;
        for (i = 0; ok && i < res.n_nodes; i++)
            if (res.ranking[i] < 0 || res.ranking[i] >= res.n_nodes ||
                res.candidate_group[i] < -1 || res.candidate_group[i] >= res.n_groups)
                ok = 0;
    } else if (res.n_kept != 0 || res.clique_members || res.ranking) {
        ok = 0;
    }
    rsloc_geo_result_free(&res);
    return ok;
}

int main(int argc, char **argv)
{
    rng r;
    clock_t stop;
    long calls = 0, failures = 0, codes[8] = {0};
    int32_t *ints = malloc(sizeof(int32_t) * 2 * MAX_EDGES);
    int32_t *patch = malloc(sizeof(int32_t) * MAX_NODES);
    double *xy = malloc(sizeof(double) * 4 * MAX_NODES);
    float *score = malloc(sizeof(float) * MAX_NODES);
    char err[64];
    if (argc != 3 || !ints || !patch || !xy || !score) {
        fprintf(stderr, "usage: fuzz_driver <seed> <seconds>\n");
        free(ints), free(patch), free(xy), free(score);
        return 2;
    }
    r.state = strtoull(argv[1], NULL, 10);
    stop = clock() + (clock_t)(atof(argv[2]) * CLOCKS_PER_SEC);
    while (clock() < stop) {
        int ok = next_u32(&r) % 2 ? fuzz_maximal(&r, ints, err, codes)
                                  : fuzz_geo(&r, patch, xy, score, err, codes);
        calls++;
        if (!ok && ++failures <= 10)
            fprintf(stderr, "FAIL: call %ld broke the API's contract\n", calls);
    }
    free(ints), free(patch), free(xy), free(score);
    printf("fuzz_driver: %ld calls, %ld failures; maximal ok/inval/nomem/limit %ld/%ld/%ld/%ld, "
           "geo %ld/%ld/%ld/%ld\n",
           calls, failures, codes[0], codes[1], codes[2], codes[3], codes[4], codes[5], codes[6],
           codes[7]);
    return failures ? 1 : 0;
}

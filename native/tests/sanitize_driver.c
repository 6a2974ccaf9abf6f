/*
 * sanitize_driver.c — exercises the whole public API of rsloc_cliques under AddressSanitizer and
 * UBSan (tests/test_native.py builds and runs it). Small graphs are checked against
 * brute force; every other call must return its documented status. Exit status 0 = all good.
 */
#include "rsloc_cliques.h"
#include "test_rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_BRUTE 14
#define ERR_LEN 256

static int failures = 0;

typedef struct {
    int n;
    unsigned char adj[MAX_BRUTE][MAX_BRUTE];
} small_graph;

static void check(int ok, const char *what)
{
    if (!ok) {
        fprintf(stderr, "FAIL: %s\n", what);
        failures++;
    }
}

/* Number of maximal cliques of size >= min_size, by enumerating every node subset. */
static int64_t brute_count(const small_graph *g, int min_size)
{
    int n = g->n;
    int64_t count = 0;
    uint32_t set;
    for (set = 1; set < (1u << n); set++) {
        int u, v, size = 0, clique = 1, maximal = 1;
        for (u = 0; u < n && clique; u++) {
            if (!(set >> u & 1u))
                continue;
            size++;
            for (v = u + 1; v < n; v++)
                if ((set >> v & 1u) && !g->adj[u][v])
                    clique = 0;
        }
        if (!clique || size < min_size)
            continue;
        for (v = 0; v < n && maximal; v++) {
            int all = 1;
            if (set >> v & 1u)
                continue;
            for (u = 0; u < n; u++)
                if ((set >> u & 1u) && !g->adj[u][v])
                    all = 0;
            if (all)
                maximal = 0;
        }
        count += maximal;
    }
    return count;
}

/* Each reported clique is a maximal clique of adj, members ascending, cliques lexicographic. */
static int well_formed(const small_graph *g, const rsloc_clique_set *set)
{
    int n = g->n;
    int64_t c, k, j;
    for (c = 0; c < set->n_cliques; c++) {
        const int32_t *m = set->members + set->offsets[c];
        int64_t len = set->offsets[c + 1] - set->offsets[c];
        int v;
        for (k = 0; k < len; k++) {
            if (m[k] < 0 || m[k] >= n || (k > 0 && m[k] <= m[k - 1]))
                return 0;
            for (j = 0; j < k; j++)
                if (!g->adj[m[j]][m[k]])
                    return 0;
        }
        for (v = 0; v < n; v++) {
            int all = 1;
            for (k = 0; k < len && all; k++)
                all = m[k] != v && g->adj[m[k]][v];
            if (all)
                return 0;
        }
        if (c > 0) {
            const int32_t *p = set->members + set->offsets[c - 1];
            int64_t plen = m - p, i = 0;
            while (i < plen && i < len && p[i] == m[i])
                i++;
            if (!(i < plen && i < len ? p[i] < m[i] : plen < len))
                return 0;
        }
    }
    return 1;
}

static void random_graphs(void)
{
    rng r = {42};
    int trial;
    for (trial = 0; trial < 300; trial++) {
        small_graph g;
        int32_t edges[2 * MAX_BRUTE * MAX_BRUTE + 4];
        int n = 1 + (int)(next_u32(&r) % MAX_BRUTE), u, v, min_size = 1 + trial % 4;
        int64_t m = 0;
        double p = next_unit(&r);
        rsloc_clique_params prm;
        rsloc_clique_set set;
        char err[ERR_LEN];
        memset(&g, 0, sizeof g);
        g.n = n;
        for (u = 0; u < n; u++)
            for (v = u + 1; v < n; v++)
                if (next_unit(&r) < p) {
                    g.adj[u][v] = g.adj[v][u] = 1;
                    edges[2 * m] = (trial & 1) ? v : u; /* both orientations */
                    edges[2 * m + 1] = (trial & 1) ? u : v;
                    m++;
                }
        edges[2 * m] = edges[2 * m + 1] = 0; /* a self-loop */
        m++;
        if (m > 1) {
            edges[2 * m] = edges[0]; /* a duplicate */
            edges[2 * m + 1] = edges[1];
            m++;
        }
        rsloc_clique_params_default(&prm);
        prm.min_size = min_size;
        check(rsloc_maximal_cliques(n, m, edges, &prm, &set, err, ERR_LEN) == RSLOC_OK,
              "random graph: status");
        check(!set.truncated, "random graph: not truncated");
        check(set.n_cliques == brute_count(&g, min_size), "random graph: clique count");
        check(well_formed(&g, &set), "random graph: cliques well formed");
        rsloc_clique_set_free(&set);

        prm.min_ratio = 0.75;
        check(rsloc_maximal_cliques(n, m, edges, &prm, &set, err, ERR_LEN) == RSLOC_OK,
              "min_ratio: status");
        check(well_formed(&g, &set), "min_ratio: cliques well formed");
        rsloc_clique_set_free(&set);

        prm.min_ratio = 0;
        prm.max_cliques = 1;
        prm.max_steps = 2;
        check(rsloc_maximal_cliques(n, m, edges, &prm, &set, err, ERR_LEN) == RSLOC_OK,
              "limits: status");
        check(set.n_cliques <= 1, "limits: at most max_cliques");
        check(well_formed(&g, &set), "limits: cliques well formed");
        rsloc_clique_set_free(&set);
    }
}

static void fill_hits(rng *r, int32_t n, int32_t n_patches, int32_t *patch, double *px,
                      double *py, double *lon, double *lat, float *score)
{
    int32_t i;
    for (i = 0; i < n; i++) {
        patch[i] = (int32_t)(next_u32(r) % (uint32_t)n_patches) * 7; /* sparse ids */
        px[i] = (patch[i] % 5) * 1600.0 + 800.0;
        py[i] = (patch[i] / 5 % 5) * 2400.0 + 1200.0;
        lon[i] = -2.5 + 0.2 * next_unit(r);
        lat[i] = 47.8 + 0.2 * next_unit(r);
        score[i] = (float)next_unit(r);
    }
}

static int geo_result_consistent(const rsloc_geo_result *res, int32_t n)
{
    int32_t i, c;
    unsigned char *seen = calloc((size_t)n + 1, 1);
    int ok = seen != NULL && res->n_nodes == n;
    for (i = 0; ok && i < n; i++) {
        int32_t h = res->ranking[i];
        ok = h >= 0 && h < n && !seen[h];
        if (ok)
            seen[h] = 1;
        ok = ok && (res->candidate_group[i] < 0 ? res->candidate_score[i] == 0
                                                : res->candidate_score[i] ==
                                                      res->group_score[res->candidate_group[i]]);
    }
    for (c = 0; ok && c < res->n_kept; c++)
        ok = res->clique_size[c] == res->clique_offsets[c + 1] - res->clique_offsets[c] &&
             res->clique_group[c] >= 0 && res->clique_group[c] < res->n_groups;
    free(seen);
    return ok;
}

static void geo_random(void)
{
    rng r = {7};
    int trial;
    for (trial = 0; trial < 20; trial++) {
        int32_t n = 1 + (int32_t)(next_u32(&r) % 3000), n_patches = 1 + trial % 25;
        int32_t *patch = malloc((size_t)n * sizeof *patch);
        double *px = malloc((size_t)n * sizeof *px), *py = malloc((size_t)n * sizeof *py);
        double *lon = malloc((size_t)n * sizeof *lon), *lat = malloc((size_t)n * sizeof *lat);
        float *score = malloc((size_t)n * sizeof *score);
        rsloc_hits hits;
        rsloc_geo_params prm;
        rsloc_geo_result res;
        char err[ERR_LEN];
        if (!patch || !px || !py || !lon || !lat || !score) {
            fprintf(stderr, "driver: out of memory\n");
            exit(2);
        }
        fill_hits(&r, n, n_patches, patch, px, py, lon, lat, score);
        hits.n = n;
        hits.patch = patch;
        hits.px = px;
        hits.py = py;
        hits.lon = lon;
        hits.lat = lat;
        hits.score = score;
        hits.gsd_x = hits.gsd_y = 0.5;
        rsloc_geo_params_default(&prm);
        prm.max_edges_total = 1 + trial * 500;
        prm.max_edges_per_node = 1 + trial % 5;
        prm.keep_ratio = (trial % 3) * 0.4;
        prm.min_distance_m = (trial % 2) * 300.0;
        prm.suppress_ratio = (trial % 4) * 0.3;
        check(rsloc_geo_cliques(&hits, &prm, &res, err, ERR_LEN) == RSLOC_OK, "geo: status");
        check(geo_result_consistent(&res, n), "geo: consistent result");
        rsloc_geo_result_free(&res);
        rsloc_geo_result_free(&res); /* freeing twice is harmless */

        prm.max_cliques = 1;
        prm.max_search_steps = 3;
        check(rsloc_geo_cliques(&hits, &prm, &res, err, ERR_LEN) == RSLOC_OK,
              "geo limits: status");
        check(geo_result_consistent(&res, n), "geo limits: consistent result");
        rsloc_geo_result_free(&res);

        prm.max_pair_checks = 1;
        check(n < 2 || rsloc_geo_cliques(&hits, &prm, &res, err, ERR_LEN) != RSLOC_EINVAL,
              "geo pair limit: no EINVAL");
        rsloc_geo_result_free(&res);

        check(rsloc_geo_cliques(&hits, NULL, &res, NULL, 0) == RSLOC_OK, "geo: NULL params");
        rsloc_geo_result_free(&res);
        free(patch);
        free(px);
        free(py);
        free(lon);
        free(lat);
        free(score);
    }
}

static void invalid_inputs(void)
{
    int32_t patch[3] = {0, 1, 2}, bad_edges[4] = {0, 1, 1, 5};
    double px[3] = {0, 100, 0}, py[3] = {0, 0, 100};
    double lon[3] = {2.0, 2.001, 2.0}, lat[3] = {48.0, 48.0, 48.001};
    float score[3] = {0.5f, 0.6f, 0.7f};
    rsloc_hits hits = {3, patch, px, py, lon, lat, score, 1.0, 1.0}, h;
    rsloc_geo_params prm;
    rsloc_geo_result res;
    rsloc_clique_params cp;
    rsloc_clique_set set;
    char err[ERR_LEN];
    int code;

    rsloc_geo_params_default(&prm);
    h = hits;
    lon[1] = NAN;
    check(rsloc_geo_cliques(&h, &prm, &res, err, ERR_LEN) == RSLOC_EINVAL, "NaN lon");
    check(strchr(err, '\n') == NULL && strlen(err) > 0, "NaN lon: one-line message");
    lon[1] = 2.001;
    px[2] = INFINITY;
    check(rsloc_geo_cliques(&h, &prm, &res, err, ERR_LEN) == RSLOC_EINVAL, "inf px");
    px[2] = 0;
    lat[0] = 91;
    check(rsloc_geo_cliques(&h, &prm, &res, err, ERR_LEN) == RSLOC_EINVAL, "lat > 90");
    lat[0] = 48.0;
    score[0] = NAN;
    check(rsloc_geo_cliques(&h, &prm, &res, err, ERR_LEN) == RSLOC_EINVAL, "NaN score");
    score[0] = 0.5f;
    h.gsd_x = 0;
    check(rsloc_geo_cliques(&h, &prm, &res, err, ERR_LEN) == RSLOC_EINVAL, "gsd 0");
    h = hits;
    h.n = -1;
    check(rsloc_geo_cliques(&h, &prm, &res, err, ERR_LEN) == RSLOC_EINVAL, "negative n");
    h = hits;
    h.lat = NULL;
    check(rsloc_geo_cliques(&h, &prm, &res, err, ERR_LEN) == RSLOC_EINVAL, "NULL array");
    patch[0] = -3;
    check(rsloc_geo_cliques(&hits, &prm, &res, err, ERR_LEN) == RSLOC_EINVAL, "negative patch");
    patch[0] = 0;
    check(rsloc_geo_cliques(NULL, &prm, &res, err, ERR_LEN) == RSLOC_EINVAL, "NULL hits");
    check(rsloc_geo_cliques(&hits, &prm, NULL, err, ERR_LEN) == RSLOC_EINVAL, "NULL out");
    prm.keep_ratio = NAN;
    check(rsloc_geo_cliques(&hits, &prm, &res, err, ERR_LEN) == RSLOC_EINVAL, "NaN keep_ratio");
    rsloc_geo_params_default(&prm);
    prm.tolerance_m = -1;
    check(rsloc_geo_cliques(&hits, &prm, &res, err, ERR_LEN) == RSLOC_EINVAL, "negative tol");
    rsloc_geo_params_default(&prm);
    prm.max_nodes = 2;
    check(rsloc_geo_cliques(&hits, &prm, &res, err, ERR_LEN) == RSLOC_ELIMIT, "max_nodes");
    rsloc_geo_params_default(&prm);
    check(rsloc_geo_cliques(&hits, &prm, &res, err, 4) == RSLOC_OK, "valid triangle");
    check(res.n_kept == 1 && res.clique_size[0] == 3, "valid triangle: one clique of 3");
    rsloc_geo_result_free(&res);

    rsloc_clique_params_default(&cp);
    check(rsloc_maximal_cliques(4, 2, bad_edges, &cp, &set, err, ERR_LEN) == RSLOC_EINVAL,
          "edge out of range");
    check(rsloc_maximal_cliques(-1, 0, NULL, &cp, &set, err, ERR_LEN) == RSLOC_EINVAL,
          "negative nodes");
    check(rsloc_maximal_cliques(4, 1, NULL, &cp, &set, err, ERR_LEN) == RSLOC_EINVAL,
          "NULL edges");
    check(rsloc_maximal_cliques(4, 0, NULL, &cp, NULL, err, ERR_LEN) == RSLOC_EINVAL,
          "NULL set");
    cp.min_size = 0;
    check(rsloc_maximal_cliques(4, 0, NULL, &cp, &set, err, ERR_LEN) == RSLOC_EINVAL,
          "min_size 0");
    rsloc_clique_params_default(&cp);
    cp.min_ratio = 2;
    check(rsloc_maximal_cliques(4, 0, NULL, &cp, &set, err, ERR_LEN) == RSLOC_EINVAL,
          "min_ratio 2");
    rsloc_clique_set_free(&set);
    for (code = -1; code <= 4; code++)
        check(rsloc_strerror(code) != NULL, "strerror");
}

static void empty_inputs(void)
{
    int32_t patch[4] = {3, 3, 3, 3};
    double px[4] = {0, 0, 0, 0}, py[4] = {0, 0, 0, 0};
    double lon[4] = {2.0, 2.1, 2.2, 2.3}, lat[4] = {48.0, 48.0, 48.0, 48.0};
    float score[4] = {0.1f, 0.4f, 0.3f, 0.2f};
    rsloc_hits hits = {0, NULL, NULL, NULL, NULL, NULL, NULL, 1.0, 1.0};
    rsloc_geo_result res;
    rsloc_clique_set set;

    check(rsloc_geo_cliques(&hits, NULL, &res, NULL, 0) == RSLOC_OK && res.n_kept == 0,
          "no hits");
    rsloc_geo_result_free(&res);
    hits.n = 4;
    hits.patch = patch;
    hits.px = px;
    hits.py = py;
    hits.lon = lon;
    hits.lat = lat;
    hits.score = score;
    check(rsloc_geo_cliques(&hits, NULL, &res, NULL, 0) == RSLOC_OK, "one patch: status");
    check(res.n_edges == 0 && res.n_kept == 0 && res.ranking[0] == 1, "one patch: empty result");
    rsloc_geo_result_free(&res);
    check(rsloc_maximal_cliques(0, 0, NULL, NULL, &set, NULL, 0) == RSLOC_OK &&
              set.n_cliques == 0,
          "empty graph");
    rsloc_clique_set_free(&set);
}

/* Huge requests must fail cleanly (run with allocator_may_return_null=1 and an allocation cap),
 * and a million hits at one spot must hit the pair-check limit instead of running for hours. */
static void big_inputs(void)
{
    rsloc_clique_set set;
    rsloc_geo_result res;
    int32_t n = 1000000, i;
    int32_t *patch = malloc((size_t)n * sizeof *patch);
    double *px = malloc((size_t)n * sizeof *px), *py = malloc((size_t)n * sizeof *py);
    double *lon = malloc((size_t)n * sizeof *lon), *lat = malloc((size_t)n * sizeof *lat);
    float *score = malloc((size_t)n * sizeof *score);
    rsloc_hits hits;
    char err[ERR_LEN];

    check(rsloc_maximal_cliques(INT32_MAX, 0, NULL, NULL, &set, err, ERR_LEN) == RSLOC_ENOMEM,
          "huge graph: ENOMEM");
    rsloc_clique_set_free(&set);
    if (!patch || !px || !py || !lon || !lat || !score) {
        fprintf(stderr, "driver: out of memory\n");
        exit(2);
    }
    for (i = 0; i < n; i++) {
        patch[i] = i % 100;
        px[i] = (i % 10) * 1000.0;
        py[i] = (i % 100 / 10) * 1000.0;
        lon[i] = 2.0;
        lat[i] = 48.0;
        score[i] = 0.5f;
    }
    hits.n = n;
    hits.patch = patch;
    hits.px = px;
    hits.py = py;
    hits.lon = lon;
    hits.lat = lat;
    hits.score = score;
    hits.gsd_x = hits.gsd_y = 1.0;
    check(rsloc_geo_cliques(&hits, NULL, &res, err, ERR_LEN) == RSLOC_ELIMIT,
          "a million hits at one spot: ELIMIT");
    rsloc_geo_result_free(&res);
    free(patch);
    free(px);
    free(py);
    free(lon);
    free(lat);
    free(score);
}

int main(void)
{
    random_graphs();
    geo_random();
    invalid_inputs();
    empty_inputs();
    big_inputs();
    if (failures) {
        fprintf(stderr, "%d check(s) failed\n", failures);
        return 1;
    }
    printf("sanitize_driver: all checks passed\n");
    return 0;
}

/*
 * rsloc_internal.h — declarations shared by the native library's source files (native/sources.txt
 * lists them); not part of the public API, which is rsloc_cliques.h. Functions shared between
 * files carry the rsloc__ prefix so they cannot collide with a caller's symbols.
 */
#ifndef RSLOC_INTERNAL_H
#define RSLOC_INTERNAL_H

#include "rsloc_cliques.h"

/* ---- small helpers (rsloc_common.c, documented there) ------------------------------------ */

/* Writes the formatted one-line message to err (when given) and returns code. */
int rsloc__fail(char *err, size_t err_len, int code, const char *fmt, ...);
void *rsloc__alloc_array(size_t count, size_t size);
void *rsloc__zalloc_array(size_t count, size_t size);
int rsloc__reserve(void **data, size_t *cap, size_t need, size_t size);
int rsloc__cmp_i32(const void *a, const void *b);
void rsloc__sort_i32(int32_t *v, size_t n);
int rsloc__radix_order(uint64_t *key, int32_t n, int32_t *order);

/* Bit counts of the Bron–Kerbosch bitsets, inline: they sit in its innermost loops. */
static inline int popcount64(uint64_t x)
{
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_popcountll(x);
#else
    int c = 0;
    while (x) {
        x &= x - 1;
        c++;
    }
    return c;
#endif
}

static inline int ctz64(uint64_t x)
{
#if defined(__GNUC__) || defined(__clang__)
    return __builtin_ctzll(x);
#else
    int c = 0;
    while (!(x & 1u)) {
        x >>= 1;
        c++;
    }
    return c;
#endif
}

/* ---- maximal cliques of a graph in CSR form (rsloc_maximal.c) ---------------------------- */

/* rsloc_maximal_cliques on a graph given as lower CSR: node v's earlier neighbours are
 * lo_adj[lo_off[v]..lo_off[v+1]), ascending (each edge once, no duplicates or self-loops);
 * params already checked. RSLOC_OK or RSLOC_ENOMEM (out zeroed); writes no message. */
int rsloc__graph_cliques(int32_t n, const int64_t *lo_off, const int32_t *lo_adj,
                         const rsloc_clique_params *params, rsloc_clique_set *out);

/* ---- stage 2's graph (rsloc_geo_edges.c, used by rsloc_geo.c) ---------------------------- */

/* Nodes: the hits that survive suppression, in the scan's order; node_hit[v] = v's hit index.
 * Lower CSR (off, adj) as rsloc__graph_cliques takes it. */
typedef struct {
    int32_t n;
    int64_t *off;
    int32_t *adj;
    int32_t *node_hit;
    int64_t n_edges;
    int32_t n_suppressed;
} rsloc__geo_graph;

/* Grid index, suppression, the edge rule and its budgets for the hits (dense: their dense patch
 * numbers, n_patches >= 2 of them). RSLOC_OK, RSLOC_ELIMIT (message in err) or RSLOC_ENOMEM;
 * release with rsloc__geo_graph_free (also safe on a zeroed graph). */
int rsloc__geo_graph_build(const rsloc_hits *h, const int32_t *dense, int32_t n_patches,
                           const rsloc_geo_params *p, rsloc__geo_graph *g, char *err,
                           size_t err_len);
void rsloc__geo_graph_free(rsloc__geo_graph *g);

#endif /* RSLOC_INTERNAL_H */

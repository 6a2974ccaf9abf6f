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

/* ---- stage 2 internals (built in rsloc_geo_edges.c, used by rsloc_geo.c) ------------------ */

#define GRID_SPLIT 4 /* grid cells are reach / GRID_SPLIT wide */

/* An edge and its rank key: residual ascending, summed similarity descending, then its ends'
 * grid positions ascending. */
typedef struct {
    float res;
    float ssum;
    int32_t a, b; /* a < b: the ends' grid positions */
} edge_key;

/* Hits sorted by grid cell, with their data in that order (structure of arrays). */
typedef struct {
    int32_t n, n_cells;
    int64_t ncols, nrows;
    int32_t *idx, *patch;
    double *lon, *lat, *mlon, *mlat, *x, *y; /* x, y: patch centre in ground metres */
    float *score;
    int64_t *cell_key;   /* n_cells, ascending */
    int32_t *cell_start; /* n_cells + 1 */
    double reach;        /* no edge is longer than this, metres */
    int32_t half_width[GRID_SPLIT + 1]; /* stencil: columns either side, by row offset */
} grid;

/* The grid of the hits (dense: their dense patch numbers); rsloc__grid_free releases it. */
int rsloc__grid_build(grid *gr, const rsloc_hits *h, const int32_t *dense, double tolerance_m);
void rsloc__grid_free(grid *gr);
/* Suppression, the edge rule and its budgets: the surviving edges (caller frees *edges_out). */
int rsloc__build_edges(const grid *gr, int32_t n_patches, const rsloc_geo_params *p,
                       edge_key **edges_out, int64_t *m_out, int32_t *n_suppressed, char *err,
                       size_t err_len);

#endif /* RSLOC_INTERNAL_H */

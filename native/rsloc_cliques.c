/*
 * rsloc_cliques.c — maximal cliques (Bron–Kerbosch, Tomita pivot, degeneracy order) and the
 * spatio-geographic clique stage of rsloc. The rules are spelled out in native/README.md.
 */
#include "rsloc_cliques.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define WGS84_A 6378137.0
#define WGS84_E2 6.69437999014e-3
#define DEG2RAD 0.017453292519943295
#define WORD_BITS 64
#define CELL_MARGIN 1.000001 /* widens grid cells so rounding never hides a neighbour */
#define GRID_SPLIT 4         /* grid cells are reach / GRID_SPLIT wide */
#define STENCIL_ROWS (2 * GRID_SPLIT + 1)

/* ---- small helpers ---------------------------------------------------------------------- */

static int fail(char *err, size_t err_len, int code, const char *fmt, ...)
{
    if (err != NULL && err_len > 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* malloc of count elements, NULL on overflow; never a zero-byte request. */
static void *alloc_array(size_t count, size_t size)
{
    if (count == 0)
        count = 1;
    if (count > SIZE_MAX / size)
        return NULL;
    return malloc(count * size);
}

static void *zalloc_array(size_t count, size_t size)
{
    if (count == 0)
        count = 1;
    if (count > SIZE_MAX / size)
        return NULL;
    return calloc(count, size);
}

/* Make room for `need` elements (at least one, so *data is never NULL afterwards) in a growable
 * array; 0 or RSLOC_ENOMEM. */
static int reserve(void **data, size_t *cap, size_t need, size_t size)
{
    size_t cap2;
    void *p;
    if (need <= *cap && *data != NULL)
        return RSLOC_OK;
    cap2 = *cap < 16 ? 16 : *cap;
    while (cap2 < need) {
        if (cap2 > SIZE_MAX / 2)
            return RSLOC_ENOMEM;
        cap2 *= 2;
    }
    if (cap2 > SIZE_MAX / size)
        return RSLOC_ENOMEM;
    p = realloc(*data, cap2 * size);
    if (p == NULL)
        return RSLOC_ENOMEM;
    *data = p;
    *cap = cap2;
    return RSLOC_OK;
}

static int popcount64(uint64_t x)
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

static int ctz64(uint64_t x)
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

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

static void sort_i32(int32_t *v, size_t n)
{
    size_t i, j;
    if (n > 32) {
        qsort(v, n, sizeof *v, cmp_i32);
        return;
    }
    for (i = 1; i < n; i++) {
        int32_t x = v[i];
        for (j = i; j > 0 && v[j - 1] > x; j--)
            v[j] = v[j - 1];
        v[j] = x;
    }
}

const char *rsloc_strerror(int code)
{
    switch (code) {
    case RSLOC_OK:
        return "success";
    case RSLOC_EINVAL:
        return "invalid argument";
    case RSLOC_ENOMEM:
        return "out of memory";
    case RSLOC_ELIMIT:
        return "work or size limit exceeded";
    default:
        return "unknown rsloc status code";
    }
}

/* ---- graph in CSR form -------------------------------------------------------------------- */

typedef struct {
    int32_t n;
    int64_t *off; /* n + 1 */
    int32_t *adj; /* each list ascending, without duplicates or self-loops */
} graph;

static void graph_free(graph *g)
{
    free(g->off);
    free(g->adj);
    g->off = NULL;
    g->adj = NULL;
}

/* Symmetric CSR with sorted, deduplicated lists in O(n + m): the unsorted lists are transposed,
 * which emits every list in ascending order because sources are visited in ascending order. */
static int graph_build(graph *g, int32_t n, int64_t m, const int32_t *edges)
{
    int64_t *off1 = NULL, *fill = NULL, *off2 = NULL;
    int32_t *tmp = NULL, *adj = NULL;
    int64_t e, total = 0, k, w;
    int32_t u, v;
    int rc = RSLOC_ENOMEM;

    g->n = n;
    g->off = NULL;
    g->adj = NULL;
    off1 = zalloc_array((size_t)n + 1, sizeof *off1);
    fill = alloc_array((size_t)n + 1, sizeof *fill);
    if (off1 == NULL || fill == NULL)
        goto done;
    for (e = 0; e < m; e++) {
        u = edges[2 * e];
        v = edges[2 * e + 1];
        if (u == v)
            continue;
        off1[u + 1]++;
        off1[v + 1]++;
    }
    for (u = 0; u < n; u++)
        off1[u + 1] += off1[u];
    total = off1[n];
    tmp = alloc_array((size_t)total, sizeof *tmp);
    adj = alloc_array((size_t)total, sizeof *adj);
    off2 = alloc_array((size_t)n + 1, sizeof *off2);
    if (tmp == NULL || adj == NULL || off2 == NULL)
        goto done;
    memcpy(fill, off1, ((size_t)n + 1) * sizeof *fill);
    for (e = 0; e < m; e++) {
        u = edges[2 * e];
        v = edges[2 * e + 1];
        if (u == v)
            continue;
        tmp[fill[u]++] = v;
        tmp[fill[v]++] = u;
    }
    memcpy(fill, off1, ((size_t)n + 1) * sizeof *fill);
    for (u = 0; u < n; u++)
        for (k = off1[u]; k < off1[u + 1]; k++)
            adj[fill[tmp[k]]++] = u;
    w = 0;
    off2[0] = 0;
    for (u = 0; u < n; u++) {
        int32_t prev = -1;
        for (k = off1[u]; k < off1[u + 1]; k++) {
            if (adj[k] != prev)
                adj[w++] = adj[k];
            prev = adj[k];
        }
        off2[u + 1] = w;
    }
    g->off = off2;
    g->adj = adj;
    off2 = NULL;
    adj = NULL;
    rc = RSLOC_OK;
done:
    free(off1);
    free(fill);
    free(off2);
    free(tmp);
    free(adj);
    return rc;
}

/* Degeneracy (smallest-last) order by Batagelj–Zaversnik bucket sort; ties go to the node first
 * in the bucket, so the order is a function of the graph alone. rank[v] = position of v. */
static int degeneracy_order(const graph *g, int32_t *order, int32_t *rank)
{
    int32_t n = g->n, v, d, md = 0, i;
    int32_t *deg = alloc_array((size_t)n, sizeof *deg);
    int32_t *bin = NULL;
    int64_t k;
    if (deg == NULL)
        return RSLOC_ENOMEM;
    for (v = 0; v < n; v++) {
        deg[v] = (int32_t)(g->off[v + 1] - g->off[v]);
        if (deg[v] > md)
            md = deg[v];
    }
    bin = zalloc_array((size_t)md + 1, sizeof *bin);
    if (bin == NULL) {
        free(deg);
        return RSLOC_ENOMEM;
    }
    for (v = 0; v < n; v++)
        bin[deg[v]]++;
    {
        int32_t start = 0;
        for (d = 0; d <= md; d++) {
            int32_t num = bin[d];
            bin[d] = start;
            start += num;
        }
    }
    for (v = 0; v < n; v++) {
        rank[v] = bin[deg[v]];
        order[rank[v]] = v;
        bin[deg[v]]++;
    }
    for (d = md; d > 0; d--)
        bin[d] = bin[d - 1];
    bin[0] = 0;
    for (i = 0; i < n; i++) {
        v = order[i];
        for (k = g->off[v]; k < g->off[v + 1]; k++) {
            int32_t u = g->adj[k];
            if (deg[u] > deg[v]) {
                int32_t du = deg[u], pu = rank[u], pw = bin[du], w = order[pw];
                if (u != w) {
                    rank[u] = pw;
                    order[pu] = w;
                    rank[w] = pu;
                    order[pw] = u;
                }
                bin[du]++;
                deg[u]--;
            }
        }
    }
    free(deg);
    free(bin);
    return RSLOC_OK;
}

/* ---- Bron–Kerbosch with Tomita pivoting, one degeneracy-ordered root at a time ------------ */

/* For root v (Eppstein–Löffler–Strash): P = later neighbours, X = earlier neighbours that touch
 * P. Local bitsets: nP[a] = N(a) ∩ P for every local node a (P first, then X), nX[a] = N(a) ∩ X
 * for a in P. Each recursion level owns P, XP (P-space nodes already done), XX and a candidate
 * set in `stack`. */
typedef struct {
    const graph *g;
    const rsloc_clique_params *prm;
    int32_t *loc; /* global -> local index, -1 when not local; all -1 between roots */
    int32_t *lg;  /* local -> global */
    size_t lg_cap;
    uint64_t *np, *nx, *stack;
    size_t np_cap, nx_cap, stack_cap;
    int32_t *r; /* the growing clique */
    size_t r_cap;
    int32_t p;    /* |P| of the current root: X rows of nP start here */
    size_t w, xw; /* words of a P-space and of an X-space bitset */
    int64_t steps;
    int32_t threshold; /* current least size worth reporting */
    int32_t omega;     /* largest clique found so far */
    /* output */
    int64_t *offsets;
    int32_t *members;
    size_t off_cap, mem_cap;
    int64_t n_cliques;
    int32_t truncated;
} bk_ctx;

#define BK_CONTINUE 0
#define BK_STOP 1

/* Drop stored cliques smaller than the current threshold. */
static void bk_compact(bk_ctx *c)
{
    int64_t q, kept = 0, at = 0;
    for (q = 0; q < c->n_cliques; q++) {
        int64_t lo = c->offsets[q], len = c->offsets[q + 1] - lo;
        if (len >= c->threshold) {
            memmove(c->members + at, c->members + lo, (size_t)len * sizeof *c->members);
            at += len;
            c->offsets[++kept] = at;
        }
    }
    c->n_cliques = kept;
}

static int bk_report(bk_ctx *c, int32_t rsize)
{
    int64_t start;
    if (rsize > c->omega) {
        int32_t t = (int32_t)ceil(c->prm->min_ratio * rsize);
        c->omega = rsize;
        if (t > c->threshold) {
            c->threshold = t;
            bk_compact(c);
        }
    }
    if (c->n_cliques >= c->prm->max_cliques) {
        c->truncated = 1;
        return BK_STOP;
    }
    start = c->offsets[c->n_cliques];
    if (reserve((void **)&c->members, &c->mem_cap, (size_t)start + (size_t)rsize,
                sizeof *c->members) ||
        reserve((void **)&c->offsets, &c->off_cap, (size_t)c->n_cliques + 2, sizeof *c->offsets))
        return -RSLOC_ENOMEM;
    memcpy(c->members + start, c->r, (size_t)rsize * sizeof *c->r);
    sort_i32(c->members + start, (size_t)rsize);
    c->n_cliques++;
    c->offsets[c->n_cliques] = start + rsize;
    return BK_CONTINUE;
}

static int bits_any(const uint64_t *a, size_t n)
{
    size_t i;
    for (i = 0; i < n; i++)
        if (a[i])
            return 1;
    return 0;
}

static int bits_count(const uint64_t *a, size_t n)
{
    size_t i;
    int s = 0;
    for (i = 0; i < n; i++)
        s += popcount64(a[i]);
    return s;
}

static int bits_count_and(const uint64_t *a, const uint64_t *b, size_t n)
{
    size_t i;
    int s = 0;
    for (i = 0; i < n; i++)
        s += popcount64(a[i] & b[i]);
    return s;
}

/* Returns BK_CONTINUE, BK_STOP (a limit was reached) or -RSLOC_ENOMEM. */
static int bk_recurse(bk_ctx *c, int32_t depth, int32_t rsize)
{
    size_t w = c->w, xw = c->xw, slot = 3 * w + xw, i, a;
    uint64_t *p = c->stack + (size_t)depth * slot;
    uint64_t *xp = p + w, *xx = xp + w, *cand = xx + xw;
    uint64_t *p2 = p + slot, *xp2 = p2 + w, *xx2 = xp2 + w;
    int pc, best = -1;
    size_t pivot = 0;

    if (++c->steps > c->prm->max_steps) {
        c->truncated = 1;
        return BK_STOP;
    }
    pc = bits_count(p, w);
    if (pc == 0) {
        if (!bits_any(xp, w) && !bits_any(xx, xw) && rsize >= c->threshold)
            return bk_report(c, rsize);
        return BK_CONTINUE;
    }
    if (rsize + pc < c->threshold)
        return BK_CONTINUE;

    /* Pivot: the node of P ∪ X with most neighbours in P. An X node adjacent to all of P means
     * every clique here extends by it, so none is maximal. */
    for (i = 0; i < w; i++) {
        uint64_t bits = p[i] | xp[i];
        while (bits) {
            int b = ctz64(bits);
            int cnt;
            bits &= bits - 1;
            a = i * WORD_BITS + (size_t)b;
            cnt = bits_count_and(p, c->np + a * w, w);
            if (cnt == pc) /* only an X node can reach |P|: it has no self-loop */
                return BK_CONTINUE;
            if (cnt > best) {
                best = cnt;
                pivot = a;
            }
        }
    }
    for (i = 0; i < xw; i++) {
        uint64_t bits = xx[i];
        while (bits) {
            int b = ctz64(bits);
            int cnt;
            bits &= bits - 1;
            a = (size_t)c->p + i * WORD_BITS + (size_t)b; /* X rows follow the P rows */
            cnt = bits_count_and(p, c->np + a * w, w);
            if (cnt == pc)
                return BK_CONTINUE;
            if (cnt > best) {
                best = cnt;
                pivot = a;
            }
        }
    }
    for (i = 0; i < w; i++)
        cand[i] = p[i] & ~c->np[pivot * w + i];

    for (i = 0; i < w; i++) {
        uint64_t bits = cand[i];
        while (bits) {
            int b = ctz64(bits);
            const uint64_t *nw, *nxw;
            size_t j;
            int rc;
            bits &= bits - 1;
            a = i * WORD_BITS + (size_t)b;
            nw = c->np + a * w;
            nxw = c->nx + a * xw;
            for (j = 0; j < w; j++) {
                p2[j] = p[j] & nw[j];
                xp2[j] = xp[j] & nw[j];
            }
            for (j = 0; j < xw; j++)
                xx2[j] = xx[j] & nxw[j];
            c->r[rsize] = c->lg[a];
            rc = bk_recurse(c, depth + 1, rsize + 1);
            if (rc != BK_CONTINUE)
                return rc;
            p[i] &= ~((uint64_t)1 << b);
            xp[i] |= (uint64_t)1 << b;
        }
    }
    return BK_CONTINUE;
}

/* Is x in the ascending list a[lo..hi)? */
static int sorted_contains(const int32_t *a, int64_t lo, int64_t hi, int32_t x)
{
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (a[mid] < x)
            lo = mid + 1;
        else if (a[mid] > x)
            hi = mid;
        else
            return 1;
    }
    return 0;
}

/* All maximal cliques whose earliest node in the degeneracy order is v. */
static int bk_root(bk_ctx *c, int32_t v, const int32_t *rank)
{
    const graph *g = c->g;
    int64_t k, lo = g->off[v], hi = g->off[v + 1];
    int32_t deg = (int32_t)(hi - lo), p = 0, x = 0, a, t, xkeep = 0;
    size_t w, xw, i, slot;
    uint64_t *level;

    for (k = lo; k < hi; k++)
        if (rank[g->adj[k]] > rank[v])
            p++;
    if (p == 0) {
        /* {v} is maximal only when v is isolated. */
        if (deg == 0 && c->threshold <= 1) {
            c->r[0] = v;
            return bk_report(c, 1);
        }
        return BK_CONTINUE;
    }
    if (p + 1 < c->threshold)
        return BK_CONTINUE;

    w = ((size_t)p + WORD_BITS - 1) / WORD_BITS;
    if (reserve((void **)&c->lg, &c->lg_cap, (size_t)deg, sizeof *c->lg) ||
        reserve((void **)&c->np, &c->np_cap, (size_t)deg * w, sizeof *c->np))
        return -RSLOC_ENOMEM;
    a = 0;
    for (k = lo; k < hi; k++)
        if (rank[g->adj[k]] > rank[v]) {
            c->loc[g->adj[k]] = a;
            c->lg[a++] = g->adj[k];
        }
    for (k = lo; k < hi; k++)
        if (rank[g->adj[k]] < rank[v]) {
            c->loc[g->adj[k]] = a;
            c->lg[a++] = g->adj[k];
            x++;
        }
    memset(c->np, 0, (size_t)deg * w * sizeof *c->np);

    /* nP: for each P node u, mark u in the rows of its local neighbours. A huge adjacency list
     * is probed by binary search from the (fewer) local nodes instead of scanned. */
    for (a = 0; a < p; a++) {
        int32_t u = c->lg[a];
        int64_t ulo = g->off[u], uhi = g->off[u + 1];
        uint64_t bit = (uint64_t)1 << (a % WORD_BITS);
        size_t word = (size_t)a / WORD_BITS;
        if (uhi - ulo <= 4 * (int64_t)deg) {
            for (k = ulo; k < uhi; k++) {
                int32_t b = c->loc[g->adj[k]];
                if (b >= 0)
                    c->np[(size_t)b * w + word] |= bit;
            }
        } else {
            for (t = 0; t < deg; t++)
                if (t != a && sorted_contains(g->adj, ulo, uhi, c->lg[t]))
                    c->np[(size_t)t * w + word] |= bit;
        }
    }
    for (k = lo; k < hi; k++)
        c->loc[g->adj[k]] = -1;

    /* Keep only X nodes adjacent to some P node: the others cannot block a clique holding a P
     * node, and every clique rooted here holds one. */
    for (t = 0; t < x; t++) {
        const uint64_t *row = c->np + ((size_t)p + (size_t)t) * w;
        if (bits_any(row, w)) {
            if (t != xkeep) {
                memmove(c->np + ((size_t)p + (size_t)xkeep) * w, row, w * sizeof *row);
                c->lg[p + xkeep] = c->lg[p + t];
            }
            xkeep++;
        }
    }
    xw = ((size_t)xkeep + WORD_BITS - 1) / WORD_BITS;
    slot = 3 * w + xw;
    if (reserve((void **)&c->nx, &c->nx_cap, (size_t)p * xw, sizeof *c->nx) ||
        reserve((void **)&c->stack, &c->stack_cap, ((size_t)p + 2) * slot, sizeof *c->stack) ||
        reserve((void **)&c->r, &c->r_cap, (size_t)p + 1, sizeof *c->r))
        return -RSLOC_ENOMEM;
    memset(c->nx, 0, (size_t)p * xw * sizeof *c->nx);
    for (t = 0; t < xkeep; t++) {
        const uint64_t *row = c->np + ((size_t)p + (size_t)t) * w;
        uint64_t bit = (uint64_t)1 << (t % WORD_BITS);
        for (i = 0; i < w; i++) {
            uint64_t bits = row[i];
            while (bits) {
                size_t b = i * WORD_BITS + (size_t)ctz64(bits);
                bits &= bits - 1;
                c->nx[b * xw + (size_t)t / WORD_BITS] |= bit;
            }
        }
    }

    level = c->stack;
    memset(level, 0, slot * sizeof *level);
    for (a = 0; a < p; a++)
        level[a / WORD_BITS] |= (uint64_t)1 << (a % WORD_BITS);
    for (t = 0; t < xkeep; t++)
        level[2 * w + (size_t)t / WORD_BITS] |= (uint64_t)1 << (t % WORD_BITS);
    c->p = p;
    c->w = w;
    c->xw = xw;
    c->r[0] = v;
    return bk_recurse(c, 0, 1);
}

void rsloc_clique_params_default(rsloc_clique_params *params)
{
    if (params == NULL)
        return;
    params->min_size = 3;
    params->min_ratio = 0.0;
    params->max_cliques = 1000000;
    params->max_steps = 10000000;
}

void rsloc_clique_set_free(rsloc_clique_set *set)
{
    if (set == NULL)
        return;
    free(set->offsets);
    free(set->members);
    memset(set, 0, sizeof *set);
}

typedef struct {
    const int32_t *m;
    int64_t len;
} clique_ref;

static int clique_ref_cmp(const void *x, const void *y)
{
    const clique_ref *a = x, *b = y;
    int64_t i, n = a->len < b->len ? a->len : b->len;
    for (i = 0; i < n; i++)
        if (a->m[i] != b->m[i])
            return a->m[i] < b->m[i] ? -1 : 1;
    return (a->len > b->len) - (a->len < b->len);
}

/* Reorders the cliques of c lexicographically into out. */
static int emit_sorted(const bk_ctx *c, rsloc_clique_set *out)
{
    int64_t q, n = c->n_cliques, total = c->offsets[n];
    clique_ref *refs = alloc_array((size_t)n, sizeof *refs);
    int64_t *off = alloc_array((size_t)n + 1, sizeof *off);
    int32_t *mem = alloc_array((size_t)total, sizeof *mem);
    if (refs == NULL || off == NULL || mem == NULL) {
        free(refs);
        free(off);
        free(mem);
        return RSLOC_ENOMEM;
    }
    for (q = 0; q < n; q++) {
        refs[q].m = c->members + c->offsets[q];
        refs[q].len = c->offsets[q + 1] - c->offsets[q];
    }
    qsort(refs, (size_t)n, sizeof *refs, clique_ref_cmp);
    off[0] = 0;
    for (q = 0; q < n; q++) {
        memcpy(mem + off[q], refs[q].m, (size_t)refs[q].len * sizeof *mem);
        off[q + 1] = off[q] + refs[q].len;
    }
    free(refs);
    out->n_cliques = n;
    out->offsets = off;
    out->members = mem;
    out->truncated = c->truncated;
    return RSLOC_OK;
}

int rsloc_maximal_cliques(int32_t n_nodes, int64_t n_edges, const int32_t *edges,
                          const rsloc_clique_params *params, rsloc_clique_set *out,
                          char *err, size_t err_len)
{
    rsloc_clique_params defaults;
    graph g = {0, NULL, NULL};
    bk_ctx c;
    int32_t *order = NULL, *rank = NULL, i;
    int64_t e;
    int rc;

    if (out == NULL)
        return fail(err, err_len, RSLOC_EINVAL, "the output clique set is NULL");
    memset(out, 0, sizeof *out);
    if (params == NULL) {
        rsloc_clique_params_default(&defaults);
        params = &defaults;
    }
    if (n_nodes < 0 || n_edges < 0)
        return fail(err, err_len, RSLOC_EINVAL, "negative size: %ld nodes, %lld edges",
                    (long)n_nodes, (long long)n_edges);
    if (n_edges > 0 && edges == NULL)
        return fail(err, err_len, RSLOC_EINVAL, "edges is NULL but n_edges = %lld",
                    (long long)n_edges);
    if (params->min_size < 1 || params->max_cliques < 1 || params->max_steps < 1)
        return fail(err, err_len, RSLOC_EINVAL,
                    "min_size, max_cliques and max_steps must be >= 1 (got %ld, %lld, %lld)",
                    (long)params->min_size, (long long)params->max_cliques,
                    (long long)params->max_steps);
    if (!(params->min_ratio >= 0 && params->min_ratio <= 1))
        return fail(err, err_len, RSLOC_EINVAL, "min_ratio must lie in [0, 1], got %g",
                    params->min_ratio);
    if ((uint64_t)n_edges > SIZE_MAX / (4 * sizeof(int32_t)))
        return fail(err, err_len, RSLOC_ENOMEM, "%lld edges do not fit in memory",
                    (long long)n_edges);
    for (e = 0; e < n_edges; e++) {
        int32_t u = edges[2 * e], v = edges[2 * e + 1];
        if (u < 0 || u >= n_nodes || v < 0 || v >= n_nodes)
            return fail(err, err_len, RSLOC_EINVAL,
                        "edge %lld joins nodes %ld and %ld, outside 0..%ld", (long long)e,
                        (long)u, (long)v, (long)n_nodes - 1);
    }

    memset(&c, 0, sizeof c);
    c.g = &g;
    c.prm = params;
    rc = graph_build(&g, n_nodes, n_edges, edges);
    if (rc != RSLOC_OK)
        goto done;
    rc = RSLOC_ENOMEM;
    order = alloc_array((size_t)n_nodes, sizeof *order);
    rank = alloc_array((size_t)n_nodes, sizeof *rank);
    c.loc = alloc_array((size_t)n_nodes, sizeof *c.loc);
    if (order == NULL || rank == NULL || c.loc == NULL ||
        reserve((void **)&c.offsets, &c.off_cap, 1, sizeof *c.offsets) ||
        reserve((void **)&c.r, &c.r_cap, 1, sizeof *c.r))
        goto done;
    c.offsets[0] = 0;
    c.threshold = params->min_size;
    for (i = 0; i < n_nodes; i++)
        c.loc[i] = -1;
    if (degeneracy_order(&g, order, rank) != RSLOC_OK)
        goto done;
    /* Roots from the densest core down, so large cliques come early and raise the threshold. */
    for (i = n_nodes - 1; i >= 0; i--) {
        int brc = bk_root(&c, order[i], rank);
        if (brc < 0)
            goto done;
        if (brc == BK_STOP)
            break;
    }
    rc = emit_sorted(&c, out);
done:
    if (rc == RSLOC_ENOMEM)
        fail(err, err_len, rc, "out of memory finding maximal cliques of %ld nodes, %lld edges",
             (long)n_nodes, (long long)n_edges);
    graph_free(&g);
    free(order);
    free(rank);
    free(c.loc);
    free(c.lg);
    free(c.np);
    free(c.nx);
    free(c.stack);
    free(c.r);
    free(c.offsets);
    free(c.members);
    return rc;
}

/* ---- stage 2: spatio-geographic cliques --------------------------------------------------- */

void rsloc_geo_params_default(rsloc_geo_params *params)
{
    if (params == NULL)
        return;
    params->tolerance_m = 1500.0;
    params->min_distance_m = 0.0;
    params->suppress_ratio = 1.0;
    params->max_edges_per_node = 256;
    params->max_edges_total = 4000000;
    params->min_clique_size = 3;
    params->top_n = 64;
    params->keep_ratio = 0.5;
    params->max_cliques = 100000;
    params->max_search_steps = 10000000;
    params->max_pair_checks = 500000000;
    params->max_nodes = 4000000;
}

void rsloc_geo_result_free(rsloc_geo_result *result)
{
    if (result == NULL)
        return;
    free(result->clique_offsets);
    free(result->clique_members);
    free(result->clique_size);
    free(result->clique_mean_score);
    free(result->clique_group);
    free(result->group_score);
    free(result->candidate_score);
    free(result->candidate_group);
    free(result->ranking);
    memset(result, 0, sizeof *result);
}

static int check_geo_params(const rsloc_geo_params *p, char *err, size_t err_len)
{
    if (!(isfinite(p->tolerance_m) && p->tolerance_m >= 0))
        return fail(err, err_len, RSLOC_EINVAL, "tolerance_m must be finite and >= 0, got %g",
                    p->tolerance_m);
    if (!(isfinite(p->min_distance_m) && p->min_distance_m >= 0))
        return fail(err, err_len, RSLOC_EINVAL, "min_distance_m must be finite and >= 0, got %g",
                    p->min_distance_m);
    if (!(p->suppress_ratio >= 0 && p->suppress_ratio <= 1))
        return fail(err, err_len, RSLOC_EINVAL, "suppress_ratio must lie in [0, 1], got %g",
                    p->suppress_ratio);
    if (!(p->keep_ratio >= 0 && p->keep_ratio <= 1))
        return fail(err, err_len, RSLOC_EINVAL, "keep_ratio must lie in [0, 1], got %g",
                    p->keep_ratio);
    if (p->min_clique_size < 2)
        return fail(err, err_len, RSLOC_EINVAL, "min_clique_size must be >= 2, got %ld",
                    (long)p->min_clique_size);
    if (p->max_edges_per_node < 1 || p->max_edges_total < 1 || p->top_n < 1 ||
        p->max_cliques < 1 || p->max_search_steps < 1 || p->max_pair_checks < 1 ||
        p->max_nodes < 0)
        return fail(err, err_len, RSLOC_EINVAL,
                    "max_edges_per_node, max_edges_total, top_n, max_cliques, max_search_steps "
                    "and max_pair_checks must be >= 1, max_nodes >= 0");
    return RSLOC_OK;
}

static int check_hits(const rsloc_hits *h, const rsloc_geo_params *p, char *err, size_t err_len)
{
    int32_t i;
    if (h->n < 0)
        return fail(err, err_len, RSLOC_EINVAL, "negative number of hits: %ld", (long)h->n);
    if (h->n > p->max_nodes)
        return fail(err, err_len, RSLOC_ELIMIT, "%ld hits exceed max_nodes = %ld", (long)h->n,
                    (long)p->max_nodes);
    if (!(isfinite(h->gsd_x) && isfinite(h->gsd_y) && h->gsd_x > 0 && h->gsd_y > 0))
        return fail(err, err_len, RSLOC_EINVAL,
                    "ground resolution must be finite and > 0, got %g x %g m/px", h->gsd_x,
                    h->gsd_y);
    if (h->n == 0)
        return RSLOC_OK;
    if (h->patch == NULL || h->px == NULL || h->py == NULL || h->lon == NULL ||
        h->lat == NULL || h->score == NULL)
        return fail(err, err_len, RSLOC_EINVAL, "a hit array is NULL");
    for (i = 0; i < h->n; i++) {
        if (h->patch[i] < 0)
            return fail(err, err_len, RSLOC_EINVAL, "hit %ld: negative patch id %ld", (long)i,
                        (long)h->patch[i]);
        if (!isfinite(h->px[i]) || !isfinite(h->py[i]))
            return fail(err, err_len, RSLOC_EINVAL, "hit %ld: patch centre is NaN or infinite",
                        (long)i);
        if (!(h->lon[i] >= -180 && h->lon[i] <= 180 && h->lat[i] >= -90 && h->lat[i] <= 90))
            return fail(err, err_len, RSLOC_EINVAL,
                        "hit %ld: lon/lat (%g, %g) is NaN or outside [-180, 180] x [-90, 90]",
                        (long)i, h->lon[i], h->lat[i]);
        if (!isfinite(h->score[i]))
            return fail(err, err_len, RSLOC_EINVAL, "hit %ld: score is NaN or infinite",
                        (long)i);
    }
    return RSLOC_OK;
}

/* Dense patch numbers 0..n_patches-1 in ascending order of the caller's ids. */
static int dense_patches(const rsloc_hits *h, int32_t *dense, int32_t *n_patches)
{
    int32_t i, u = 0, *ids = alloc_array((size_t)h->n, sizeof *ids);
    if (ids == NULL)
        return RSLOC_ENOMEM;
    memcpy(ids, h->patch, (size_t)h->n * sizeof *ids);
    qsort(ids, (size_t)h->n, sizeof *ids, cmp_i32);
    for (i = 0; i < h->n; i++)
        if (i == 0 || ids[i] != ids[u - 1])
            ids[u++] = ids[i];
    for (i = 0; i < h->n; i++) {
        int32_t lo = 0, hi = u;
        while (lo < hi) {
            int32_t mid = lo + (hi - lo) / 2;
            if (ids[mid] < h->patch[i])
                lo = mid + 1;
            else
                hi = mid;
        }
        dense[i] = lo;
    }
    free(ids);
    *n_patches = u;
    return RSLOC_OK;
}

/* An edge and its rank key: residual ascending, summed similarity descending, then its ends'
 * grid positions ascending. */
typedef struct {
    float res;
    float ssum;
    int32_t a, b; /* a < b: the ends' grid positions */
} edge_key;

static int edge_key_cmp(const void *x, const void *y)
{
    const edge_key *e = x, *f = y;
    if (e->res != f->res)
        return e->res < f->res ? -1 : 1;
    if (e->ssum != f->ssum)
        return e->ssum > f->ssum ? -1 : 1;
    if (e->a != f->a)
        return e->a < f->a ? -1 : 1;
    return (e->b > f->b) - (e->b < f->b);
}

typedef struct {
    int64_t key;
    int32_t idx;
} cell_item;

static int cell_item_cmp(const void *x, const void *y)
{
    const cell_item *a = x, *b = y;
    if (a->key != b->key)
        return a->key < b->key ? -1 : 1;
    return (a->idx > b->idx) - (a->idx < b->idx);
}

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

static void grid_free(grid *gr)
{
    free(gr->idx);
    free(gr->patch);
    free(gr->lon);
    free(gr->lat);
    free(gr->mlon);
    free(gr->mlat);
    free(gr->x);
    free(gr->y);
    free(gr->score);
    free(gr->cell_key);
    free(gr->cell_start);
}

/* WGS84 metres per degree of longitude and of latitude at latitude lat (degrees). */
static void metres_per_degree(double lat, double *mlon, double *mlat)
{
    double phi = lat * DEG2RAD, s = sin(phi), w = 1.0 - WGS84_E2 * s * s;
    *mlon = DEG2RAD * WGS84_A / sqrt(w) * cos(phi);
    *mlat = DEG2RAD * WGS84_A * (1.0 - WGS84_E2) / (w * sqrt(w));
}

/* Square cells of side reach / GRID_SPLIT on the ground (in degrees: that over the smallest metres
 * per degree among the hits). Hits dr rows and dc columns apart are more than
 * (|dr|-1)+ and (|dc|-1)+ cells apart on each axis, so an edge needs
 * (|dr|-1)+^2 + (|dc|-1)+^2 < GRID_SPLIT^2: that disc of cells is the stencil scanned. */
static int grid_build(grid *gr, const rsloc_hits *h, const int32_t *dense, double tolerance_m)
{
    int32_t n = h->n, i;
    double lon0 = h->lon[0], lat0 = h->lat[0], lon1 = lon0, lat1 = lat0;
    double x0, x1, y0, y1, mlon_min, mlat_min, dx, dy, cell_lon, cell_lat;
    cell_item *items = NULL;

    memset(gr, 0, sizeof *gr);
    gr->n = n;
    gr->idx = alloc_array((size_t)n, sizeof *gr->idx);
    gr->patch = alloc_array((size_t)n, sizeof *gr->patch);
    gr->lon = alloc_array((size_t)n, sizeof *gr->lon);
    gr->lat = alloc_array((size_t)n, sizeof *gr->lat);
    gr->mlon = alloc_array((size_t)n, sizeof *gr->mlon);
    gr->mlat = alloc_array((size_t)n, sizeof *gr->mlat);
    gr->x = alloc_array((size_t)n, sizeof *gr->x);
    gr->y = alloc_array((size_t)n, sizeof *gr->y);
    gr->score = alloc_array((size_t)n, sizeof *gr->score);
    gr->cell_key = alloc_array((size_t)n, sizeof *gr->cell_key);
    gr->cell_start = alloc_array((size_t)n + 1, sizeof *gr->cell_start);
    items = alloc_array((size_t)n, sizeof *items);
    if (gr->idx == NULL || gr->patch == NULL || gr->lon == NULL || gr->lat == NULL ||
        gr->mlon == NULL || gr->mlat == NULL || gr->x == NULL || gr->y == NULL ||
        gr->score == NULL || gr->cell_key == NULL || gr->cell_start == NULL || items == NULL) {
        free(items);
        return RSLOC_ENOMEM;
    }

    x0 = x1 = h->px[0] * h->gsd_x;
    y0 = y1 = h->py[0] * h->gsd_y;
    metres_per_degree(h->lat[0], &mlon_min, &mlat_min);
    for (i = 0; i < n; i++) {
        double mlon, mlat, x = h->px[i] * h->gsd_x, y = h->py[i] * h->gsd_y;
        metres_per_degree(h->lat[i], &mlon, &mlat);
        mlon_min = mlon < mlon_min ? mlon : mlon_min;
        mlat_min = mlat < mlat_min ? mlat : mlat_min;
        lon0 = h->lon[i] < lon0 ? h->lon[i] : lon0;
        lon1 = h->lon[i] > lon1 ? h->lon[i] : lon1;
        lat0 = h->lat[i] < lat0 ? h->lat[i] : lat0;
        lat1 = h->lat[i] > lat1 ? h->lat[i] : lat1;
        x0 = x < x0 ? x : x0;
        x1 = x > x1 ? x : x1;
        y0 = y < y0 ? y : y0;
        y1 = y > y1 ? y : y1;
    }
    /* The longest pixel distance x gsd is the diagonal of the patch centres' bounding box,
     * computed with the same operations as a pair's distance so rounding cannot exceed it. */
    dx = x1 - x0;
    dy = y1 - y0;
    gr->reach = (sqrt(dx * dx + dy * dy) + tolerance_m) * CELL_MARGIN;
    if (!(gr->reach >= 1.0))
        gr->reach = 1.0;
    if (mlon_min < 1e-6)
        mlon_min = 1e-6; /* at a pole: one column */
    cell_lon = gr->reach / GRID_SPLIT / mlon_min;
    cell_lat = gr->reach / GRID_SPLIT / mlat_min;
    for (i = 0; i <= GRID_SPLIT; i++) {
        int32_t a = i > 0 ? i - 1 : 0, b = 0;
        while (a * a + b * b < GRID_SPLIT * GRID_SPLIT)
            b++;
        gr->half_width[i] = b; /* largest (|dc|-1)+ allowed is b - 1 */
    }
    /* Indices stay below 1e8 rows x 2e8 columns because reach >= 1 m. */
    gr->nrows = (int64_t)floor((lat1 - lat0) / cell_lat) + 1;
    gr->ncols = (int64_t)floor((lon1 - lon0) / cell_lon) + 1;
    for (i = 0; i < n; i++) {
        int64_t row = (int64_t)floor((h->lat[i] - lat0) / cell_lat);
        int64_t col = (int64_t)floor((h->lon[i] - lon0) / cell_lon);
        items[i].key = row * gr->ncols + col;
        items[i].idx = i;
    }
    qsort(items, (size_t)n, sizeof *items, cell_item_cmp);
    gr->n_cells = 0;
    for (i = 0; i < n; i++) {
        int32_t j = items[i].idx;
        gr->idx[i] = j;
        gr->patch[i] = dense[j];
        gr->lon[i] = h->lon[j];
        gr->lat[i] = h->lat[j];
        metres_per_degree(h->lat[j], &gr->mlon[i], &gr->mlat[i]);
        gr->x[i] = h->px[j] * h->gsd_x;
        gr->y[i] = h->py[j] * h->gsd_y;
        gr->score[i] = h->score[j];
        if (i == 0 || items[i].key != gr->cell_key[gr->n_cells - 1]) {
            gr->cell_key[gr->n_cells] = items[i].key;
            gr->cell_start[gr->n_cells++] = i;
        }
    }
    gr->cell_start[gr->n_cells] = n;
    free(items);
    return RSLOC_OK;
}

/* Per stencil row, the first and one-past-last cell of the current run. Cells are visited in
 * key order and every run bound is a non-decreasing function of the cell key, so the cursors
 * only move forward: O(cells x rows) for a whole scan. */
typedef struct {
    int32_t lo[STENCIL_ROWS], hi[STENCIL_ROWS];
} stencil_cursor;

/* The hits of the stencil around cell c, as runs [lo, hi) of sorted positions (cells of one row
 * are consecutive keys, hence one run per row). Returns the run count. */
static int neighbour_runs(const grid *gr, int32_t c, stencil_cursor *cur, int32_t *lo,
                          int32_t *hi)
{
    int64_t key = gr->cell_key[c], row = key / gr->ncols, col = key % gr->ncols;
    int d, runs = 0;
    for (d = 0; d < STENCIL_ROWS; d++) {
        int64_t r = row + d - GRID_SPLIT, k0, k1;
        int64_t w = gr->half_width[d < GRID_SPLIT ? GRID_SPLIT - d : d - GRID_SPLIT];
        int32_t *a = &cur->lo[d], *b = &cur->hi[d];
        if (r < 0 || r >= gr->nrows || w == 0)
            continue;
        k0 = r * gr->ncols + (col >= w ? col - w : 0);
        k1 = r * gr->ncols + (col + w < gr->ncols ? col + w : gr->ncols - 1);
        while (*a < gr->n_cells && gr->cell_key[*a] < k0)
            (*a)++;
        if (*b < *a)
            *b = *a;
        while (*b < gr->n_cells && gr->cell_key[*b] <= k1)
            (*b)++;
        if (*a < *b) {
            lo[runs] = gr->cell_start[*a];
            hi[runs] = gr->cell_start[*b];
            runs++;
        }
    }
    return runs;
}

static void swap_edges(edge_key *e, int64_t i, int64_t j)
{
    edge_key t = e[i];
    e[i] = e[j];
    e[j] = t;
}

/* Reorder e[0..m) so that e[0..k) are its k best edges (quickselect, median-of-three pivots; a
 * range that does not shrink fast enough is sorted instead, so the worst case is O(m log m)). */
static void select_best(edge_key *e, int64_t m, int64_t k)
{
    int64_t lo = 0, hi = m, rounds = 0, limit = 16;
    while ((int64_t)1 << (limit / 2) < m)
        limit += 2;
    while (hi - lo > 16 && rounds++ < limit) {
        int64_t mid = lo + (hi - lo) / 2, i = lo - 1, j = hi;
        edge_key pivot;
        if (edge_key_cmp(&e[mid], &e[lo]) < 0)
            swap_edges(e, mid, lo);
        if (edge_key_cmp(&e[hi - 1], &e[lo]) < 0)
            swap_edges(e, hi - 1, lo);
        if (edge_key_cmp(&e[hi - 1], &e[mid]) < 0)
            swap_edges(e, hi - 1, mid);
        pivot = e[mid];
        for (;;) { /* Hoare partition: e[lo..j] <= pivot <= e[j+1..hi) */
            do
                i++;
            while (edge_key_cmp(&e[i], &pivot) < 0);
            do
                j--;
            while (edge_key_cmp(&e[j], &pivot) > 0);
            if (i >= j)
                break;
            swap_edges(e, i, j);
        }
        if (k <= j)
            hi = j + 1;
        else
            lo = j + 1;
    }
    if (lo < k && k < hi)
        qsort(e + lo, (size_t)(hi - lo), sizeof *e, edge_key_cmp);
}

/* Remove repeated edges in O(n + m): bucket by first end, then mark second ends. */
static int dedup_edges(edge_key *e, size_t *m, int32_t n)
{
    int32_t *start = zalloc_array((size_t)n + 1, sizeof *start);
    int32_t *mark = alloc_array((size_t)n, sizeof *mark);
    edge_key *by_a = alloc_array(*m, sizeof *by_a);
    size_t i, u = 0;
    int32_t a;
    if (start == NULL || mark == NULL || by_a == NULL) {
        free(start);
        free(mark);
        free(by_a);
        return RSLOC_ENOMEM;
    }
    for (i = 0; i < *m; i++)
        start[e[i].a + 1]++;
    for (a = 0; a < n; a++) {
        start[a + 1] += start[a];
        mark[a] = -1;
    }
    for (i = 0; i < *m; i++)
        by_a[start[e[i].a]++] = e[i];
    for (i = 0; i < *m; i++) {
        if (mark[by_a[i].b] != by_a[i].a) {
            mark[by_a[i].b] = by_a[i].a;
            e[u++] = by_a[i];
        }
    }
    *m = u;
    free(start);
    free(mark);
    free(by_a);
    return RSLOC_OK;
}

/* Is hit s outranked (higher similarity; ties: lower hit index) by a hit of its own patch
 * within radius (squared: r2) on the ground? */
static int dominated(const grid *gr, int32_t s, const int32_t *lo, const int32_t *hi, int runs,
                     double r2)
{
    int r;
    int32_t t;
    for (r = 0; r < runs; r++) {
        for (t = lo[r]; t < hi[r]; t++) {
            double dx, dy;
            if (gr->patch[t] != gr->patch[s] || t == s)
                continue;
            if (gr->score[t] < gr->score[s] ||
                (gr->score[t] == gr->score[s] && gr->idx[t] > gr->idx[s]))
                continue;
            dx = (gr->lon[t] - gr->lon[s]) * (gr->mlon[s] + gr->mlon[t]);
            dy = (gr->lat[t] - gr->lat[s]) * (gr->mlat[s] + gr->mlat[t]);
            if (0.25 * (dx * dx + dy * dy) <= r2)
                return 1;
        }
    }
    return 0;
}

/* Duplicate suppression (README: "Nodes"): alive[s] = 0 for every dominated hit. Returns how
 * many were dropped. */
static int32_t suppress(const grid *gr, double radius, unsigned char *alive)
{
    stencil_cursor cur;
    int32_t c, s, lo[STENCIL_ROWS], hi[STENCIL_ROWS], dropped = 0;
    memset(alive, 1, (size_t)gr->n);
    if (radius <= 0)
        return 0;
    memset(&cur, 0, sizeof cur);
    for (c = 0; c < gr->n_cells; c++) {
        int runs = neighbour_runs(gr, c, &cur, lo, hi);
        for (s = gr->cell_start[c]; s < gr->cell_start[c + 1]; s++)
            if (dominated(gr, s, lo, hi, runs, radius * radius)) {
                alive[s] = 0;
                dropped++;
            }
    }
    return dropped;
}

/* The edge rule and budgets (README: "Edges"): every hit picks, for each other patch, its best
 * edge into that patch and keeps its max_edges_per_node best picks; an edge exists when either
 * end picked it; the max_edges_total (B) best edges survive. Picks are cut to the best 2B
 * whenever they reach 3B, which bounds memory without changing the outcome. */
static int build_edges(const grid *gr, int32_t n_patches, const rsloc_geo_params *p,
                       edge_key **edges_out, int64_t *m_out, int32_t *n_suppressed, char *err,
                       size_t err_len)
{
    int32_t n = gr->n, c, s, t, q, lo[STENCIL_ROWS], hi[STENCIL_ROWS];
    stencil_cursor cur;
    int runs, r;
    uint64_t checks = 0;
    size_t widest = 0, m = 0, cap = 0;
    edge_key *slot = NULL, *edges = NULL;
    int32_t *stamp = NULL, *touched = NULL;
    unsigned char *alive = NULL;
    double *screen = NULL;
    double tol = p->tolerance_m, min_d = p->min_distance_m;
    double tol2 = (tol * (1 + 1e-6) + 1e-6) * (tol * (1 + 1e-6) + 1e-6);
    int rc = RSLOC_ENOMEM;

    memset(&cur, 0, sizeof cur);
    for (c = 0; c < gr->n_cells; c++) {
        uint64_t size = (uint64_t)(gr->cell_start[c + 1] - gr->cell_start[c]);
        runs = neighbour_runs(gr, c, &cur, lo, hi);
        for (r = 0; r < runs; r++) {
            size_t len = (size_t)(hi[r] - lo[r]);
            widest = len > widest ? len : widest;
            checks += size * len;
        }
        if (checks > (uint64_t)p->max_pair_checks)
            return fail(err, err_len, RSLOC_ELIMIT,
                        "%ld hits need more than max_pair_checks = %lld pair checks (too many "
                        "hits within reach of each other): pass fewer or raise the limit",
                        (long)n, (long long)p->max_pair_checks);
    }

    slot = alloc_array((size_t)n_patches, sizeof *slot);
    stamp = zalloc_array((size_t)n_patches, sizeof *stamp);
    touched = alloc_array((size_t)n_patches, sizeof *touched);
    screen = alloc_array(widest, sizeof *screen);
    alive = alloc_array((size_t)n, sizeof *alive);
    if (slot == NULL || stamp == NULL || touched == NULL || screen == NULL || alive == NULL)
        goto done;
    *n_suppressed = suppress(gr, p->suppress_ratio * tol, alive);

    memset(&cur, 0, sizeof cur);
    for (c = 0; c < gr->n_cells; c++) {
        runs = neighbour_runs(gr, c, &cur, lo, hi);
        for (s = gr->cell_start[c]; s < gr->cell_start[c + 1]; s++) {
            int32_t i = s, ps = gr->patch[s], nt = 0;
            double lon = gr->lon[s], lat = gr->lat[s], mlon = gr->mlon[s], mlat = gr->mlat[s];
            double x = gr->x[s], y = gr->y[s];
            float si = gr->score[s];
            if (!alive[s])
                continue;
            for (r = 0; r < runs; r++) {
                int32_t len = hi[r] - lo[r];
                const double *lon_r = gr->lon + lo[r], *lat_r = gr->lat + lo[r];
                const double *mlon_r = gr->mlon + lo[r], *mlat_r = gr->mlat + lo[r];
                const double *x_r = gr->x + lo[r], *y_r = gr->y + lo[r];
                const int32_t *patch_r = gr->patch + lo[r];
                /* Screen without square roots or branches: with A = g^2 + p^2 - tol^2,
                 * |g - p| <= tol  <=>  A <= 0 or A^2 <= 4 g^2 p^2 (g ground, p pixel
                 * distance). tol2 is a hair looser than tol^2; the exact test follows. */
                for (t = 0; t < len; t++) {
                    double dx = (lon_r[t] - lon) * (mlon + mlon_r[t]);
                    double dy = (lat_r[t] - lat) * (mlat + mlat_r[t]);
                    double ex = x_r[t] - x, ey = y_r[t] - y;
                    double g2 = 0.25 * (dx * dx + dy * dy), p2 = ex * ex + ey * ey;
                    double a = g2 + p2 - tol2, q = a * a - 4.0 * g2 * p2;
                    screen[t] = a <= 0 ? -1.0 : q;
                }
                for (t = 0; t < len; t++) {
                    edge_key e;
                    int32_t j = lo[r] + t, pt = patch_r[t];
                    double dx, dy, dg, ex, ey, res;
                    if (screen[t] > 0 || pt == ps || !alive[j])
                        continue;
                    /* Exact test, the same arithmetic from either end. */
                    dx = (lon_r[t] - lon) * (mlon + mlon_r[t]);
                    dy = (lat_r[t] - lat) * (mlat + mlat_r[t]);
                    dg = 0.5 * sqrt(dx * dx + dy * dy);
                    ex = x_r[t] - x;
                    ey = y_r[t] - y;
                    res = fabs(dg - sqrt(ex * ex + ey * ey));
                    if (!(res <= tol && dg > min_d))
                        continue;
                    e.res = (float)res;
                    e.ssum = si + gr->score[j];
                    e.a = i < j ? i : j;
                    e.b = i < j ? j : i;
                    if (stamp[pt] != s + 1) {
                        stamp[pt] = s + 1;
                        slot[pt] = e;
                        touched[nt++] = pt;
                    } else if (edge_key_cmp(&e, &slot[pt]) < 0) {
                        slot[pt] = e;
                    }
                }
            }
            if (reserve((void **)&edges, &cap, m + (size_t)nt, sizeof *edges))
                goto done;
            for (q = 0; q < nt; q++)
                edges[m + (size_t)q] = slot[touched[q]];
            if (nt > p->max_edges_per_node) {
                qsort(edges + m, (size_t)nt, sizeof *edges, edge_key_cmp);
                nt = p->max_edges_per_node;
            }
            m += (size_t)nt;
            /* Each edge appears at most twice, so the best 2B picks hold the best B edges. */
            if ((uint64_t)m / 3 >= (uint64_t)p->max_edges_total) {
                select_best(edges, (int64_t)m, 2 * p->max_edges_total);
                m = 2 * (size_t)p->max_edges_total;
            }
        }
    }
    if (dedup_edges(edges, &m, n) != RSLOC_OK)
        goto done;
    if ((int64_t)m > p->max_edges_total) {
        select_best(edges, (int64_t)m, p->max_edges_total);
        m = (size_t)p->max_edges_total;
    }
    *edges_out = edges;
    *m_out = (int64_t)m;
    edges = NULL;
    rc = RSLOC_OK;
done:
    free(slot);
    free(stamp);
    free(touched);
    free(screen);
    free(alive);
    free(edges);
    return rc;
}

typedef struct {
    int32_t size;
    double mean;
    const int32_t *m; /* members, ascending */
} ranked_clique;

/* Size descending, mean similarity descending, then members in lexicographic order. */
static int ranked_cmp(const void *x, const void *y)
{
    const ranked_clique *a = x, *b = y;
    int32_t i;
    if (a->size != b->size)
        return a->size > b->size ? -1 : 1;
    if (a->mean != b->mean)
        return a->mean > b->mean ? -1 : 1;
    for (i = 0; i < a->size; i++)
        if (a->m[i] != b->m[i])
            return a->m[i] < b->m[i] ? -1 : 1;
    return 0;
}

typedef struct {
    int32_t score;
    int32_t id;
} group_rank;

static int group_rank_cmp(const void *x, const void *y)
{
    const group_rank *a = x, *b = y;
    if (a->score != b->score)
        return a->score > b->score ? -1 : 1;
    return (a->id > b->id) - (a->id < b->id);
}

typedef struct {
    int32_t cscore;
    float sim;
    int32_t idx;
} candidate_rank;

static int candidate_rank_cmp(const void *x, const void *y)
{
    const candidate_rank *a = x, *b = y;
    if (a->cscore != b->cscore)
        return a->cscore > b->cscore ? -1 : 1;
    if (a->sim != b->sim)
        return a->sim > b->sim ? -1 : 1;
    return (a->idx > b->idx) - (a->idx < b->idx);
}

/* A kept clique's claim on a patch for its group. */
typedef struct {
    int32_t group, patch, rank, hit;
} claim;

static int claim_cmp(const void *x, const void *y)
{
    const claim *a = x, *b = y;
    if (a->group != b->group)
        return a->group < b->group ? -1 : 1;
    if (a->patch != b->patch)
        return a->patch < b->patch ? -1 : 1;
    return (a->rank > b->rank) - (a->rank < b->rank);
}

static int32_t uf_find(int32_t *parent, int32_t v)
{
    while (parent[v] != v) {
        parent[v] = parent[parent[v]];
        v = parent[v];
    }
    return v;
}

/* Ranking, keep rule, merge rule, group and candidate scores (README: "Ranking and groups"). */
static int rank_and_group(const rsloc_hits *h, const int32_t *dense, const rsloc_clique_set *cs,
                          const rsloc_geo_params *p, rsloc_geo_result *out)
{
    int32_t n = h->n, i, g, kept = 0, ng = 0;
    int64_t q, k, nc = cs->n_cliques, total = 0, nclaims = 0;
    ranked_clique *ranked = alloc_array((size_t)nc, sizeof *ranked);
    int32_t *parent = alloc_array((size_t)n, sizeof *parent);
    int32_t *root_gid = alloc_array((size_t)n, sizeof *root_gid);
    int32_t *member_of = alloc_array((size_t)n, sizeof *member_of);
    candidate_rank *cand = alloc_array((size_t)n, sizeof *cand);
    int32_t *prov = NULL, *final = NULL;
    claim *claims = NULL;
    group_rank *groups = NULL;
    int rc = RSLOC_ENOMEM;

    if (ranked == NULL || parent == NULL || root_gid == NULL || member_of == NULL || cand == NULL)
        goto done;
    for (q = 0; q < nc; q++) {
        double sum = 0;
        for (k = cs->offsets[q]; k < cs->offsets[q + 1]; k++)
            sum += (double)h->score[cs->members[k]];
        ranked[q].size = (int32_t)(cs->offsets[q + 1] - cs->offsets[q]);
        ranked[q].mean = sum / ranked[q].size;
        ranked[q].m = cs->members + cs->offsets[q];
    }
    qsort(ranked, (size_t)nc, sizeof *ranked, ranked_cmp);
    while (kept < nc && kept < p->top_n && ranked[kept].size >= p->keep_ratio * ranked[0].size)
        kept++;
    for (k = 0; k < kept; k++)
        total += ranked[k].size;

    out->n_kept = kept;
    out->clique_offsets = alloc_array((size_t)kept + 1, sizeof *out->clique_offsets);
    out->clique_members = alloc_array((size_t)total, sizeof *out->clique_members);
    out->clique_size = alloc_array((size_t)kept, sizeof *out->clique_size);
    out->clique_mean_score = alloc_array((size_t)kept, sizeof *out->clique_mean_score);
    out->clique_group = alloc_array((size_t)kept, sizeof *out->clique_group);
    out->candidate_score = alloc_array((size_t)n, sizeof *out->candidate_score);
    out->candidate_group = alloc_array((size_t)n, sizeof *out->candidate_group);
    out->ranking = alloc_array((size_t)n, sizeof *out->ranking);
    prov = alloc_array((size_t)kept, sizeof *prov);
    claims = alloc_array((size_t)total, sizeof *claims);
    if (out->clique_offsets == NULL || out->clique_members == NULL || out->clique_size == NULL ||
        out->clique_mean_score == NULL || out->clique_group == NULL ||
        out->candidate_score == NULL || out->candidate_group == NULL || out->ranking == NULL ||
        prov == NULL || claims == NULL)
        goto done;

    /* Kept cliques in rank order; cliques sharing a hit fall into one group (union-find). */
    out->clique_offsets[0] = 0;
    for (i = 0; i < n; i++) {
        parent[i] = i;
        root_gid[i] = -1;
    }
    for (k = 0; k < kept; k++) {
        const int32_t *m = ranked[k].m;
        int32_t size = ranked[k].size, a, r0 = uf_find(parent, m[0]);
        memcpy(out->clique_members + out->clique_offsets[k], m, (size_t)size * sizeof *m);
        out->clique_offsets[k + 1] = out->clique_offsets[k] + size;
        out->clique_size[k] = size;
        out->clique_mean_score[k] = ranked[k].mean;
        for (a = 1; a < size; a++) {
            int32_t ra = uf_find(parent, m[a]);
            if (ra < r0) {
                parent[r0] = ra;
                r0 = ra;
            } else if (ra > r0) {
                parent[ra] = r0;
            }
        }
    }
    /* Provisional group ids in order of each group's best clique. */
    for (k = 0; k < kept; k++) {
        int32_t r0 = uf_find(parent, out->clique_members[out->clique_offsets[k]]);
        if (root_gid[r0] < 0)
            root_gid[r0] = ng++;
        prov[k] = root_gid[r0];
    }
    /* Each group holds one hit per patch: the one in its best-ranked clique covering the patch
     * (a clique never holds two hits of one patch). Group score = its number of patches. */
    for (k = 0; k < kept; k++)
        for (q = out->clique_offsets[k]; q < out->clique_offsets[k + 1]; q++) {
            claims[nclaims].group = prov[k];
            claims[nclaims].patch = dense[out->clique_members[q]];
            claims[nclaims].rank = (int32_t)k;
            claims[nclaims++].hit = out->clique_members[q];
        }
    qsort(claims, (size_t)nclaims, sizeof *claims, claim_cmp);
    groups = alloc_array((size_t)ng, sizeof *groups);
    final = alloc_array((size_t)ng, sizeof *final);
    out->group_score = alloc_array((size_t)ng, sizeof *out->group_score);
    if (groups == NULL || final == NULL || out->group_score == NULL)
        goto done;
    for (g = 0; g < ng; g++) {
        groups[g].score = 0;
        groups[g].id = g;
    }
    for (i = 0; i < n; i++)
        member_of[i] = -1;
    for (k = 0; k < nclaims; k++)
        if (k == 0 || claims[k].group != claims[k - 1].group ||
            claims[k].patch != claims[k - 1].patch) {
            member_of[claims[k].hit] = claims[k].group;
            groups[claims[k].group].score++;
        }
    qsort(groups, (size_t)ng, sizeof *groups, group_rank_cmp);
    for (g = 0; g < ng; g++) {
        final[groups[g].id] = g;
        out->group_score[g] = groups[g].score;
    }
    out->n_groups = ng;
    for (k = 0; k < kept; k++)
        out->clique_group[k] = final[prov[k]];

    for (i = 0; i < n; i++) {
        g = member_of[i] < 0 ? -1 : final[member_of[i]];
        out->candidate_group[i] = g;
        out->candidate_score[i] = g < 0 ? 0 : out->group_score[g];
        cand[i].cscore = out->candidate_score[i];
        cand[i].sim = h->score[i];
        cand[i].idx = i;
    }
    qsort(cand, (size_t)n, sizeof *cand, candidate_rank_cmp);
    for (i = 0; i < n; i++)
        out->ranking[i] = cand[i].idx;
    rc = RSLOC_OK;
done:
    free(ranked);
    free(parent);
    free(root_gid);
    free(member_of);
    free(cand);
    free(prov);
    free(final);
    free(claims);
    free(groups);
    return rc;
}

int rsloc_geo_cliques(const rsloc_hits *hits, const rsloc_geo_params *params,
                      rsloc_geo_result *out, char *err, size_t err_len)
{
    rsloc_geo_params defaults;
    rsloc_clique_params cp;
    rsloc_clique_set cs = {0, NULL, NULL, 0};
    grid gr;
    int32_t *dense = NULL, *pairs = NULL, n_patches = 0, n_suppressed = 0;
    edge_key *edges = NULL;
    int64_t m = 0, e, q;
    int rc;

    if (out == NULL)
        return fail(err, err_len, RSLOC_EINVAL, "the output result is NULL");
    memset(out, 0, sizeof *out);
    memset(&gr, 0, sizeof gr);
    if (hits == NULL)
        return fail(err, err_len, RSLOC_EINVAL, "hits is NULL");
    if (params == NULL) {
        rsloc_geo_params_default(&defaults);
        params = &defaults;
    }
    rc = check_geo_params(params, err, err_len);
    if (rc == RSLOC_OK)
        rc = check_hits(hits, params, err, err_len);
    if (rc != RSLOC_OK)
        return rc;

    rc = RSLOC_ENOMEM;
    dense = alloc_array((size_t)hits->n, sizeof *dense);
    if (dense == NULL)
        goto done;
    if (hits->n > 0 && dense_patches(hits, dense, &n_patches) != RSLOC_OK)
        goto done;
    if (n_patches >= 2) {
        if (grid_build(&gr, hits, dense, params->tolerance_m) != RSLOC_OK)
            goto done;
        rc = build_edges(&gr, n_patches, params, &edges, &m, &n_suppressed, err, err_len);
        if (rc != RSLOC_OK)
            goto done;
        rc = RSLOC_ENOMEM;
        pairs = alloc_array(2 * (size_t)m, sizeof *pairs);
        if (pairs == NULL)
            goto done;
        for (e = 0; e < m; e++) {
            pairs[2 * e] = edges[e].a;
            pairs[2 * e + 1] = edges[e].b;
        }
        free(edges);
        edges = NULL;
        cp.min_size = params->min_clique_size;
        cp.min_ratio = params->keep_ratio;
        cp.max_cliques = params->max_cliques;
        cp.max_steps = params->max_search_steps;
        rc = rsloc_maximal_cliques(hits->n, m, pairs, &cp, &cs, err, err_len);
        if (rc != RSLOC_OK)
            goto done;
        rc = RSLOC_ENOMEM;
        /* Graph nodes are grid positions (for locality); back to hit indices. */
        for (q = 0; q < cs.n_cliques; q++) {
            for (e = cs.offsets[q]; e < cs.offsets[q + 1]; e++)
                cs.members[e] = gr.idx[cs.members[e]];
            sort_i32(cs.members + cs.offsets[q], (size_t)(cs.offsets[q + 1] - cs.offsets[q]));
        }
    }
    if (rank_and_group(hits, dense, &cs, params, out) != RSLOC_OK)
        goto done;
    out->n_nodes = hits->n;
    out->n_suppressed = n_suppressed;
    out->n_edges = m;
    out->n_maximal = cs.n_cliques;
    out->truncated = cs.truncated;
    rc = RSLOC_OK;
done:
    if (rc == RSLOC_ENOMEM)
        fail(err, err_len, rc, "out of memory in the clique stage for %ld hits", (long)hits->n);
    if (rc != RSLOC_OK)
        rsloc_geo_result_free(out);
    rsloc_clique_set_free(&cs);
    grid_free(&gr);
    free(dense);
    free(pairs);
    free(edges);
    return rc;
}

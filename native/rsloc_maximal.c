/*
 * rsloc_maximal.c — maximal cliques of a graph (Bron–Kerbosch, Tomita pivot, degeneracy order):
 * rsloc_maximal_cliques and its params and result. The rules are spelled out in native/README.md.
 */
#include "rsloc_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define WORD_BITS 64

/* ---- graph in CSR form -------------------------------------------------------------------- */

typedef struct {
    int32_t n;
    const int64_t *off; /* n + 1 */
    const int32_t *adj; /* each list ascending, without duplicates or self-loops */
} graph;

/* Frees a graph that owns its arrays (built by graph_build or core_subgraph). */
static void graph_free(graph *g)
{
    free((void *)g->off);
    free((void *)g->adj);
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
    off1 = rsloc__zalloc_array((size_t)n + 1, sizeof *off1);
    fill = rsloc__alloc_array((size_t)n + 1, sizeof *fill);
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
    tmp = rsloc__alloc_array((size_t)total, sizeof *tmp);
    adj = rsloc__alloc_array((size_t)total, sizeof *adj);
    off2 = rsloc__alloc_array((size_t)n + 1, sizeof *off2);
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
    int32_t *deg = rsloc__alloc_array((size_t)n, sizeof *deg);
    int32_t *bin = NULL;
    int64_t k;
    if (deg == NULL)
        return RSLOC_ENOMEM;
    for (v = 0; v < n; v++) {
        deg[v] = (int32_t)(g->off[v + 1] - g->off[v]);
        if (deg[v] > md)
            md = deg[v];
    }
    bin = rsloc__zalloc_array((size_t)md + 1, sizeof *bin);
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
    if (rsloc__reserve((void **)&c->members, &c->mem_cap, (size_t)start + (size_t)rsize,
                       sizeof *c->members) ||
        rsloc__reserve((void **)&c->offsets, &c->off_cap, (size_t)c->n_cliques + 2,
                       sizeof *c->offsets))
        return -RSLOC_ENOMEM;
    memcpy(c->members + start, c->r, (size_t)rsize * sizeof *c->r);
    rsloc__sort_i32(c->members + start, (size_t)rsize);
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
    if (rsloc__reserve((void **)&c->lg, &c->lg_cap, (size_t)deg, sizeof *c->lg) ||
        rsloc__reserve((void **)&c->np, &c->np_cap, (size_t)deg * w, sizeof *c->np))
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
    if (rsloc__reserve((void **)&c->nx, &c->nx_cap, (size_t)p * xw, sizeof *c->nx) ||
        rsloc__reserve((void **)&c->stack, &c->stack_cap, ((size_t)p + 2) * slot,
                       sizeof *c->stack) ||
        rsloc__reserve((void **)&c->r, &c->r_cap, (size_t)p + 1, sizeof *c->r))
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
    clique_ref *refs = rsloc__alloc_array((size_t)n, sizeof *refs);
    int64_t *off = rsloc__alloc_array((size_t)n + 1, sizeof *off);
    int32_t *mem = rsloc__alloc_array((size_t)total, sizeof *mem);
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

/* ---- the search restricted to the nodes that can hold a reported clique ------------------ */

/* Greedy cliques grown from this many nodes of highest degree (in the pool below) give the lower
 * bound on the clique number that seeds the threshold. On the 200,000-hit benchmark
 * (bench/clique.py, seed 0) 1 start and 8 both found the largest clique (80), and the whole search
 * took 4.1 and 4.0 ms (best of 5, this 2-core machine): the spare starts are for graphs whose
 * top node is not in a large clique. */
#define GREEDY_STARTS 8

/* A clique grown from `start`: repeatedly add the candidate of highest degree (ties: lowest id) and
 * keep the candidates adjacent to it. cand, tmp hold max-degree entries. Returns its size. */
static int32_t greedy_clique(const graph *g, int32_t start, int32_t *cand, int32_t *tmp)
{
    int64_t k, lo = g->off[start], hi = g->off[start + 1];
    int32_t nc = (int32_t)(hi - lo), size = 1, i;
    memcpy(cand, g->adj + lo, (size_t)nc * sizeof *cand);
    while (nc > 0) {
        int32_t u = cand[0], nt = 0, *swap;
        int64_t du = g->off[u + 1] - g->off[u], ulo, uhi;
        for (i = 1; i < nc; i++) {
            int64_t d = g->off[cand[i] + 1] - g->off[cand[i]];
            if (d > du) {
                du = d;
                u = cand[i];
            }
        }
        size++;
        ulo = g->off[u];
        uhi = g->off[u + 1];
        if (uhi - ulo <= 4 * (int64_t)nc) { /* merge the two ascending lists */
            k = ulo;
            for (i = 0; i < nc; i++) {
                while (k < uhi && g->adj[k] < cand[i])
                    k++;
                if (k < uhi && g->adj[k] == cand[i])
                    tmp[nt++] = cand[i];
            }
        } else { /* a hub: probe its list */
            for (i = 0; i < nc; i++)
                if (sorted_contains(g->adj, ulo, uhi, cand[i]))
                    tmp[nt++] = cand[i];
        }
        swap = cand;
        cand = tmp;
        tmp = swap;
        nc = nt;
    }
    return size;
}

/* A lower bound on the clique number: the largest greedy clique from the GREEDY_STARTS nodes of
 * highest degree (ties: lowest id). */
static int greedy_bound(const graph *g, int32_t *bound)
{
    int32_t top[GREEDY_STARTS], nt = 0, v, i, md = 0;
    int32_t *cand, *tmp;
    *bound = g->n > 0 ? 1 : 0;
    for (v = 0; v < g->n; v++) {
        int64_t d = g->off[v + 1] - g->off[v];
        md = d > md ? (int32_t)d : md;
        if (nt == GREEDY_STARTS && d <= g->off[top[nt - 1] + 1] - g->off[top[nt - 1]])
            continue;
        if (nt < GREEDY_STARTS)
            nt++;
        for (i = nt - 1; i > 0 && g->off[top[i - 1] + 1] - g->off[top[i - 1]] < d; i--)
            top[i] = top[i - 1];
        top[i] = v;
    }
    if (md == 0)
        return RSLOC_OK;
    cand = rsloc__alloc_array((size_t)md, sizeof *cand);
    tmp = rsloc__alloc_array((size_t)md, sizeof *tmp);
    if (cand == NULL || tmp == NULL) {
        free(cand);
        free(tmp);
        return RSLOC_ENOMEM;
    }
    for (i = 0; i < nt; i++) {
        int32_t size = greedy_clique(g, top[i], cand, tmp);
        *bound = size > *bound ? size : *bound;
    }
    free(cand);
    free(tmp);
    return RSLOC_OK;
}

/* The k-core of g (every node keeps >= k neighbours inside it) as an induced subgraph h with its
 * nodes renumbered in ascending order; old_id[new] = old. Only nodes of degree >= k are visited.
 * A clique of size s lies in the (s - 1)-core, and one that is maximal in g is maximal in the
 * core: a node extending it would have >= s neighbours in the core. */
static int core_subgraph(const graph *g, int32_t k, graph *h, int32_t **old_id)
{
    int32_t n = g->n, v, nq = 0, q, nh = 0;
    int32_t *d = rsloc__alloc_array((size_t)n, sizeof *d);
    int32_t *queue = rsloc__alloc_array((size_t)n, sizeof *queue);
    unsigned char *keep = rsloc__alloc_array((size_t)n, sizeof *keep);
    int64_t kk, w = 0, *hoff = NULL;
    int32_t *hadj = NULL, *old = NULL;
    int rc = RSLOC_ENOMEM;

    h->n = 0;
    h->off = NULL;
    h->adj = NULL;
    *old_id = NULL;
    if (d == NULL || queue == NULL || keep == NULL)
        goto done;
    for (v = 0; v < n; v++)
        keep[v] = g->off[v + 1] - g->off[v] >= k;
    for (v = 0; v < n; v++) {
        int32_t c = 0;
        if (!keep[v])
            continue;
        for (kk = g->off[v]; kk < g->off[v + 1]; kk++)
            c += keep[g->adj[kk]];
        d[v] = c;
    }
    for (v = 0; v < n; v++)
        if (keep[v] && d[v] < k) {
            keep[v] = 0;
            queue[nq++] = v;
        }
    for (q = 0; q < nq; q++) {
        v = queue[q];
        for (kk = g->off[v]; kk < g->off[v + 1]; kk++) {
            int32_t u = g->adj[kk];
            if (keep[u] && --d[u] < k) {
                keep[u] = 0;
                queue[nq++] = u;
            }
        }
    }
    /* Renumber: queue becomes old -> new; d[v] is now v's degree inside the core. */
    for (v = 0; v < n; v++)
        if (keep[v])
            queue[v] = nh++;
    hoff = rsloc__alloc_array((size_t)nh + 1, sizeof *hoff);
    old = rsloc__alloc_array((size_t)nh, sizeof *old);
    if (hoff == NULL || old == NULL)
        goto done;
    hoff[0] = 0;
    for (v = 0; v < n; v++)
        if (keep[v]) {
            old[queue[v]] = v;
            hoff[queue[v] + 1] = hoff[queue[v]] + d[v];
        }
    hadj = rsloc__alloc_array((size_t)hoff[nh], sizeof *hadj);
    if (hadj == NULL)
        goto done;
    for (q = 0; q < nh; q++) {
        v = old[q];
        for (kk = g->off[v]; kk < g->off[v + 1]; kk++)
            if (keep[g->adj[kk]])
                hadj[w++] = queue[g->adj[kk]];
    }
    h->n = nh;
    h->off = hoff;
    h->adj = hadj;
    *old_id = old;
    hoff = NULL;
    hadj = NULL;
    old = NULL;
    rc = RSLOC_OK;
done:
    free(hoff);
    free(hadj);
    free(old);
    free(d);
    free(queue);
    free(keep);
    return rc;
}

/* The subgraph induced by the nodes with keep[v], symmetric, nodes renumbered ascending
 * (old_id[new] = old), from the lower CSR (lo_off, lo_adj) of a graph on n nodes. Only kept
 * nodes' lists are read: an edge between two kept nodes sits in the later one's list. */
static int induced_subgraph(int32_t n, const int64_t *lo_off, const int32_t *lo_adj,
                            const unsigned char *keep, graph *h, int32_t **old_id)
{
    int32_t *newid = rsloc__alloc_array((size_t)n, sizeof *newid), *old = NULL, *adj = NULL;
    int64_t *off = NULL, *fill = NULL, k;
    int32_t v, nh = 0;
    int rc = RSLOC_ENOMEM;

    h->n = 0;
    h->off = NULL;
    h->adj = NULL;
    *old_id = NULL;
    if (newid == NULL)
        goto done;
    for (v = 0; v < n; v++)
        newid[v] = keep[v] ? nh++ : -1;
    old = rsloc__alloc_array((size_t)nh, sizeof *old);
    off = rsloc__zalloc_array((size_t)nh + 1, sizeof *off);
    fill = rsloc__alloc_array((size_t)nh + 1, sizeof *fill);
    if (old == NULL || off == NULL || fill == NULL)
        goto done;
    for (v = 0; v < n; v++) {
        if (newid[v] < 0)
            continue;
        old[newid[v]] = v;
        for (k = lo_off[v]; k < lo_off[v + 1]; k++)
            if (newid[lo_adj[k]] >= 0) {
                off[newid[v] + 1]++;
                off[newid[lo_adj[k]] + 1]++;
            }
    }
    for (v = 0; v < nh; v++)
        off[v + 1] += off[v];
    adj = rsloc__alloc_array((size_t)off[nh], sizeof *adj);
    if (adj == NULL)
        goto done;
    memcpy(fill, off, ((size_t)nh + 1) * sizeof *fill);
    /* Visiting v ascending appends v's earlier neighbours (ascending) to its own list before any
     * later neighbour appends itself: every list comes out ascending. */
    for (v = 0; v < nh; v++) {
        int32_t u = old[v];
        for (k = lo_off[u]; k < lo_off[u + 1]; k++) {
            int32_t t = newid[lo_adj[k]];
            if (t >= 0) {
                adj[fill[v]++] = t;
                adj[fill[t]++] = v;
            }
        }
    }
    h->n = nh;
    h->off = off;
    h->adj = adj;
    *old_id = old;
    off = NULL;
    adj = NULL;
    old = NULL;
    rc = RSLOC_OK;
done:
    free(newid);
    free(old);
    free(off);
    free(fill);
    free(adj);
    return rc;
}

/* The greedy lower bound runs on the subgraph of this many nodes of highest degree (ties: lowest
 * id), not the whole graph. On the 200,000-hit benchmark pools of 32, 64, 128 and 512 nodes gave
 * bounds of 32, 64, 80 and 80 (the largest clique) and searches of 80, 9.0, 4.1 and 4.2 ms (best
 * of 3, this 2-core machine). */
#define GREEDY_POOL 512

/* Maximal cliques of the graph given as lower CSR (lo_off, lo_adj) of size >= max(min_size,
 * ceil(min_ratio x largest)), searched in its k-core only, k + 1 = that size bound for a greedy
 * lower bound on the largest clique: every clique the threshold can keep lies there and is
 * maximal there exactly when it is maximal in the graph. The threshold starts at that bound. */
int rsloc__graph_cliques(int32_t n, const int64_t *lo_off, const int32_t *lo_adj,
                         const rsloc_clique_params *params, rsloc_clique_set *out)
{
    graph pool = {0, NULL, NULL}, s0 = {0, NULL, NULL}, h = {0, NULL, NULL};
    const graph *sg;
    bk_ctx c;
    int32_t *order = NULL, *rank = NULL, *deg = NULL, *pool_id = NULL, *s0_id = NULL;
    int32_t *h_id = NULL, i, v, bound = 0, start, md = 0;
    int64_t e, *hist = NULL;
    unsigned char *keep = NULL;
    int rc = RSLOC_ENOMEM;

    memset(out, 0, sizeof *out);
    memset(&c, 0, sizeof c);
    c.prm = params;
    deg = rsloc__alloc_array((size_t)n, sizeof *deg);
    keep = rsloc__alloc_array((size_t)n, sizeof *keep);
    if (deg == NULL || keep == NULL)
        goto done;
    for (v = 0; v < n; v++)
        deg[v] = (int32_t)(lo_off[v + 1] - lo_off[v]);
    for (e = 0; e < lo_off[n]; e++)
        deg[lo_adj[e]]++;
    for (v = 0; v < n; v++)
        md = deg[v] > md ? deg[v] : md;

    /* The pool: the GREEDY_POOL nodes of highest degree, by a histogram of degrees. */
    hist = rsloc__zalloc_array((size_t)md + 2, sizeof *hist);
    if (hist == NULL)
        goto done;
    for (v = 0; v < n; v++)
        hist[deg[v]]++;
    {
        int64_t above = 0, room;
        int32_t d = md;
        while (d > 0 && above + hist[d] < GREEDY_POOL)
            above += hist[d--];
        room = GREEDY_POOL - above; /* nodes of degree d admitted, lowest ids first */
        for (v = 0; v < n; v++) {
            keep[v] = deg[v] > d || (deg[v] == d && d > 0 && room > 0);
            if (deg[v] == d && d > 0 && room > 0)
                room--;
        }
    }
    if (induced_subgraph(n, lo_off, lo_adj, keep, &pool, &pool_id) != RSLOC_OK ||
        greedy_bound(&pool, &bound) != RSLOC_OK)
        goto done;
    if (bound == 0 && n > 0)
        bound = 1;
    start = (int32_t)ceil(params->min_ratio * bound);
    start = start > params->min_size ? start : params->min_size;

    /* The (start - 1)-core: of the nodes of degree >= start - 1, peeled. */
    for (v = 0; v < n; v++)
        keep[v] = start <= 2 || deg[v] >= start - 1;
    if (induced_subgraph(n, lo_off, lo_adj, keep, &s0, &s0_id) != RSLOC_OK)
        goto done;
    sg = &s0;
    if (start > 2) {
        if (core_subgraph(&s0, start - 1, &h, &h_id) != RSLOC_OK)
            goto done;
        sg = &h;
    }
    c.g = sg;
    order = rsloc__alloc_array((size_t)sg->n, sizeof *order);
    rank = rsloc__alloc_array((size_t)sg->n, sizeof *rank);
    c.loc = rsloc__alloc_array((size_t)sg->n, sizeof *c.loc);
    if (order == NULL || rank == NULL || c.loc == NULL ||
        rsloc__reserve((void **)&c.offsets, &c.off_cap, 1, sizeof *c.offsets) ||
        rsloc__reserve((void **)&c.r, &c.r_cap, 1, sizeof *c.r))
        goto done;
    c.offsets[0] = 0;
    c.threshold = start;
    c.omega = bound;
    for (i = 0; i < sg->n; i++)
        c.loc[i] = -1;
    if (degeneracy_order(sg, order, rank) != RSLOC_OK)
        goto done;
    /* Roots from the densest core down, so large cliques come early and raise the threshold. */
    for (i = sg->n - 1; i >= 0; i--) {
        int brc = bk_root(&c, order[i], rank);
        if (brc < 0)
            goto done;
        if (brc == BK_STOP)
            break;
    }
    if (emit_sorted(&c, out) != RSLOC_OK)
        goto done;
    /* Back to the graph's numbering: each renumbering is ascending, so every order is kept. */
    for (e = 0; e < out->offsets[out->n_cliques]; e++) {
        int32_t m = out->members[e];
        if (h_id != NULL)
            m = h_id[m];
        out->members[e] = s0_id[m];
    }
    rc = RSLOC_OK;
done:
    if (rc != RSLOC_OK)
        rsloc_clique_set_free(out);
    graph_free(&pool);
    graph_free(&s0);
    graph_free(&h);
    free(pool_id);
    free(s0_id);
    free(h_id);
    free(deg);
    free(keep);
    free(hist);
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

int rsloc_maximal_cliques(int32_t n_nodes, int64_t n_edges, const int32_t *edges,
                          const rsloc_clique_params *params, rsloc_clique_set *out,
                          char *err, size_t err_len)
{
    rsloc_clique_params defaults;
    graph g = {0, NULL, NULL};
    int64_t e;
    int rc;

    if (out == NULL)
        return rsloc__fail(err, err_len, RSLOC_EINVAL, "the output clique set is NULL");
    memset(out, 0, sizeof *out);
    if (params == NULL) {
        rsloc_clique_params_default(&defaults);
        params = &defaults;
    }
    if (n_nodes < 0 || n_edges < 0)
        return rsloc__fail(err, err_len, RSLOC_EINVAL, "negative size: %ld nodes, %lld edges",
                           (long)n_nodes, (long long)n_edges);
    if (n_edges > 0 && edges == NULL)
        return rsloc__fail(err, err_len, RSLOC_EINVAL, "edges is NULL but n_edges = %lld",
                           (long long)n_edges);
    if (params->min_size < 1 || params->max_cliques < 1 || params->max_steps < 1)
        return rsloc__fail(err, err_len, RSLOC_EINVAL,
                           "min_size, max_cliques and max_steps must be >= 1 (got %ld, %lld, %lld)",
                           (long)params->min_size, (long long)params->max_cliques,
                           (long long)params->max_steps);
    if (!(params->min_ratio >= 0 && params->min_ratio <= 1))
        return rsloc__fail(err, err_len, RSLOC_EINVAL, "min_ratio must lie in [0, 1], got %g",
                           params->min_ratio);
    if ((uint64_t)n_edges > SIZE_MAX / (4 * sizeof(int32_t)))
        return rsloc__fail(err, err_len, RSLOC_ENOMEM, "%lld edges do not fit in memory",
                           (long long)n_edges);
    for (e = 0; e < n_edges; e++) {
        int32_t u = edges[2 * e], v = edges[2 * e + 1];
        if (u < 0 || u >= n_nodes || v < 0 || v >= n_nodes)
            return rsloc__fail(err, err_len, RSLOC_EINVAL,
                               "edge %lld joins nodes %ld and %ld, outside 0..%ld", (long long)e,
                               (long)u, (long)v, (long)n_nodes - 1);
    }
    rc = graph_build(&g, n_nodes, n_edges, edges);
    if (rc == RSLOC_OK) {
        /* Lower CSR: each sorted list's entries below its node. */
        int64_t *lo_off = rsloc__alloc_array((size_t)n_nodes + 1, sizeof *lo_off), k, w = 0;
        int32_t *lo_adj = rsloc__alloc_array((size_t)g.off[n_nodes] / 2, sizeof *lo_adj), u;
        rc = RSLOC_ENOMEM;
        if (lo_off != NULL && lo_adj != NULL) {
            lo_off[0] = 0;
            for (u = 0; u < n_nodes; u++) {
                for (k = g.off[u]; k < g.off[u + 1] && g.adj[k] < u; k++)
                    lo_adj[w++] = g.adj[k];
                lo_off[u + 1] = w;
            }
            graph_free(&g);
            rc = rsloc__graph_cliques(n_nodes, lo_off, lo_adj, params, out);
        }
        free(lo_off);
        free(lo_adj);
    }
    graph_free(&g);
    if (rc == RSLOC_ENOMEM)
        rsloc__fail(err, err_len, rc,
                    "out of memory finding maximal cliques of %ld nodes, %lld edges",
                    (long)n_nodes, (long long)n_edges);
    return rc;
}

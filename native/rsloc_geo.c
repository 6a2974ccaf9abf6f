/*
 * rsloc_geo.c — stage 2 of rsloc, spatio-geographic cliques: params and result, validation,
 * ranking and grouping, and the entry point rsloc_geo_cliques. The graph (grid index, suppression,
 * edges) is built in rsloc_geo_edges.c. The rules are spelled out in native/README.md.
 */
#include "rsloc_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

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
        return rsloc__fail(err, err_len, RSLOC_EINVAL,
                           "tolerance_m must be finite and >= 0, got %g", p->tolerance_m);
    if (!(isfinite(p->min_distance_m) && p->min_distance_m >= 0))
        return rsloc__fail(err, err_len, RSLOC_EINVAL,
                           "min_distance_m must be finite and >= 0, got %g", p->min_distance_m);
    if (!(p->suppress_ratio >= 0 && p->suppress_ratio <= 1))
        return rsloc__fail(err, err_len, RSLOC_EINVAL, "suppress_ratio must lie in [0, 1], got %g",
                           p->suppress_ratio);
    if (!(p->keep_ratio >= 0 && p->keep_ratio <= 1))
        return rsloc__fail(err, err_len, RSLOC_EINVAL, "keep_ratio must lie in [0, 1], got %g",
                           p->keep_ratio);
    if (p->min_clique_size < 2)
        return rsloc__fail(err, err_len, RSLOC_EINVAL, "min_clique_size must be >= 2, got %ld",
                           (long)p->min_clique_size);
    if (p->max_edges_per_node < 1 || p->max_edges_total < 1 || p->top_n < 1 ||
        p->max_cliques < 1 || p->max_search_steps < 1 || p->max_pair_checks < 1 ||
        p->max_nodes < 0)
        return rsloc__fail(err, err_len, RSLOC_EINVAL,
                           "max_edges_per_node, max_edges_total, top_n, max_cliques, "
                           "max_search_steps and max_pair_checks must be >= 1, max_nodes >= 0");
    return RSLOC_OK;
}

static int check_hits(const rsloc_hits *h, const rsloc_geo_params *p, char *err, size_t err_len)
{
    int32_t i;
    if (h->n < 0)
        return rsloc__fail(err, err_len, RSLOC_EINVAL, "negative number of hits: %ld", (long)h->n);
    if (h->n > p->max_nodes)
        return rsloc__fail(err, err_len, RSLOC_ELIMIT, "%ld hits exceed max_nodes = %ld",
                           (long)h->n, (long)p->max_nodes);
    if (!(isfinite(h->gsd_x) && isfinite(h->gsd_y) && h->gsd_x > 0 && h->gsd_y > 0))
        return rsloc__fail(err, err_len, RSLOC_EINVAL,
                           "ground resolution must be finite and > 0, got %g x %g m/px", h->gsd_x,
                           h->gsd_y);
    if (h->n == 0)
        return RSLOC_OK;
    if (h->patch == NULL || h->px == NULL || h->py == NULL || h->lon == NULL ||
        h->lat == NULL || h->score == NULL)
        return rsloc__fail(err, err_len, RSLOC_EINVAL, "a hit array is NULL");
    for (i = 0; i < h->n; i++) {
        if (h->patch[i] < 0)
            return rsloc__fail(err, err_len, RSLOC_EINVAL, "hit %ld: negative patch id %ld",
                               (long)i, (long)h->patch[i]);
        if (!isfinite(h->px[i]) || !isfinite(h->py[i]))
            return rsloc__fail(err, err_len, RSLOC_EINVAL,
                               "hit %ld: patch centre is NaN or infinite", (long)i);
        if (!(h->lon[i] >= -180 && h->lon[i] <= 180 && h->lat[i] >= -90 && h->lat[i] <= 90))
            return rsloc__fail(err, err_len, RSLOC_EINVAL,
                               "hit %ld: lon/lat (%g, %g) is NaN or outside "
                               "[-180, 180] x [-90, 90]", (long)i, h->lon[i], h->lat[i]);
        if (!isfinite(h->score[i]))
            return rsloc__fail(err, err_len, RSLOC_EINVAL, "hit %ld: score is NaN or infinite",
                               (long)i);
    }
    return RSLOC_OK;
}

/* Dense patch numbers 0..n_patches-1 in ascending order of the caller's ids: through a table of
 * the ids when they are below 4n + 1024, else a radix sort. */
static int dense_patches(const rsloc_hits *h, int32_t *dense, int32_t *n_patches)
{
    int32_t i, u = 0, n = h->n, top = 0;
    for (i = 0; i < n; i++)
        top = h->patch[i] > top ? h->patch[i] : top;
    if ((int64_t)top < 4 * (int64_t)n + 1024) {
        int32_t *table = rsloc__zalloc_array((size_t)top + 1, sizeof *table);
        if (table == NULL)
            return RSLOC_ENOMEM;
        for (i = 0; i < n; i++)
            table[h->patch[i]] = 1;
        for (i = 0; i <= top; i++)
            if (table[i])
                table[i] = ++u; /* 1 + dense number */
        for (i = 0; i < n; i++)
            dense[i] = table[h->patch[i]] - 1;
        free(table);
    } else {
        uint64_t *key = rsloc__alloc_array((size_t)n, sizeof *key);
        int32_t *order = rsloc__alloc_array((size_t)n, sizeof *order);
        if (key == NULL || order == NULL) {
            free(key);
            free(order);
            return RSLOC_ENOMEM;
        }
        for (i = 0; i < n; i++)
            key[i] = (uint64_t)h->patch[i];
        if (rsloc__radix_order(key, n, order) != RSLOC_OK) {
            free(key);
            free(order);
            return RSLOC_ENOMEM;
        }
        for (i = 0; i < n; i++) {
            if (i > 0 && h->patch[order[i]] != h->patch[order[i - 1]])
                u++;
            dense[order[i]] = u;
        }
        u = n > 0 ? u + 1 : 0;
        free(key);
        free(order);
    }
    *n_patches = u;
    return RSLOC_OK;
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
    int32_t cscore, pos; /* pos: place in the similarity order */
} scored_hit;

static int scored_hit_cmp(const void *x, const void *y)
{
    const scored_hit *a = x, *b = y;
    if (a->cscore != b->cscore)
        return a->cscore > b->cscore ? -1 : 1;
    return (a->pos > b->pos) - (a->pos < b->pos);
}

/* ranking = hit indices by (candidate score descending, similarity descending, index ascending):
 * a radix sort by similarity, then the few hits with a score moved to the front by score. */
static int rank_hits(const rsloc_hits *h, const int32_t *cscore, int32_t *ranking)
{
    int32_t n = h->n, i, ns = 0, w = 0;
    uint64_t *key = rsloc__alloc_array((size_t)n, sizeof *key);
    int32_t *order = rsloc__alloc_array((size_t)n, sizeof *order);
    scored_hit *sc = NULL;
    int rc = RSLOC_ENOMEM;
    if (key == NULL || order == NULL)
        goto done;
    for (i = 0; i < n; i++) {
        float f = h->score[i] == 0 ? 0.0f : h->score[i]; /* -0 ranks as 0 */
        uint32_t bits;
        memcpy(&bits, &f, sizeof bits);
        bits = bits >> 31 ? ~bits : bits | 0x80000000u; /* ascending with f */
        key[i] = (uint64_t)(uint32_t)~bits;
        ns += cscore[i] > 0;
    }
    if (rsloc__radix_order(key, n, order) != RSLOC_OK)
        goto done;
    sc = rsloc__alloc_array((size_t)ns, sizeof *sc);
    if (sc == NULL)
        goto done;
    for (i = 0, ns = 0; i < n; i++)
        if (cscore[order[i]] > 0) {
            sc[ns].cscore = cscore[order[i]];
            sc[ns++].pos = i;
        }
    qsort(sc, (size_t)ns, sizeof *sc, scored_hit_cmp);
    for (i = 0; i < ns; i++)
        ranking[w++] = order[sc[i].pos];
    for (i = 0; i < n; i++)
        if (cscore[order[i]] <= 0)
            ranking[w++] = order[i];
    rc = RSLOC_OK;
done:
    free(key);
    free(order);
    free(sc);
    return rc;
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
    ranked_clique *ranked = rsloc__alloc_array((size_t)nc, sizeof *ranked);
    int32_t *parent = rsloc__alloc_array((size_t)n, sizeof *parent);
    int32_t *root_gid = rsloc__alloc_array((size_t)n, sizeof *root_gid);
    int32_t *member_of = rsloc__alloc_array((size_t)n, sizeof *member_of);
    int32_t *prov = NULL, *final = NULL;
    claim *claims = NULL;
    group_rank *groups = NULL;
    int rc = RSLOC_ENOMEM;

    if (ranked == NULL || parent == NULL || root_gid == NULL || member_of == NULL)
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
    out->clique_offsets = rsloc__alloc_array((size_t)kept + 1, sizeof *out->clique_offsets);
    out->clique_members = rsloc__alloc_array((size_t)total, sizeof *out->clique_members);
    out->clique_size = rsloc__alloc_array((size_t)kept, sizeof *out->clique_size);
    out->clique_mean_score = rsloc__alloc_array((size_t)kept, sizeof *out->clique_mean_score);
    out->clique_group = rsloc__alloc_array((size_t)kept, sizeof *out->clique_group);
    out->candidate_score = rsloc__alloc_array((size_t)n, sizeof *out->candidate_score);
    out->candidate_group = rsloc__alloc_array((size_t)n, sizeof *out->candidate_group);
    out->ranking = rsloc__alloc_array((size_t)n, sizeof *out->ranking);
    prov = rsloc__alloc_array((size_t)kept, sizeof *prov);
    claims = rsloc__alloc_array((size_t)total, sizeof *claims);
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
    groups = rsloc__alloc_array((size_t)ng, sizeof *groups);
    final = rsloc__alloc_array((size_t)ng, sizeof *final);
    out->group_score = rsloc__alloc_array((size_t)ng, sizeof *out->group_score);
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
    }
    if (rank_hits(h, out->candidate_score, out->ranking) != RSLOC_OK)
        goto done;
    rc = RSLOC_OK;
done:
    free(ranked);
    free(parent);
    free(root_gid);
    free(member_of);
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
    rsloc__geo_graph g;
    int32_t *dense = NULL, n_patches = 0;
    int64_t e, q;
    int rc;

    if (out == NULL)
        return rsloc__fail(err, err_len, RSLOC_EINVAL, "the output result is NULL");
    memset(out, 0, sizeof *out);
    memset(&g, 0, sizeof g);
    if (hits == NULL)
        return rsloc__fail(err, err_len, RSLOC_EINVAL, "hits is NULL");
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
    dense = rsloc__alloc_array((size_t)hits->n, sizeof *dense);
    if (dense == NULL)
        goto done;
    if (hits->n > 0 && dense_patches(hits, dense, &n_patches) != RSLOC_OK)
        goto done;
    if (n_patches >= 2) {
        rc = rsloc__geo_graph_build(hits, dense, n_patches, params, &g, err, err_len);
        if (rc != RSLOC_OK)
            goto done;
        rc = RSLOC_ENOMEM;
        cp.min_size = params->min_clique_size;
        cp.min_ratio = params->keep_ratio;
        cp.max_cliques = params->max_cliques;
        cp.max_steps = params->max_search_steps;
        if (rsloc__graph_cliques(g.n, g.off, g.adj, &cp, &cs) != RSLOC_OK)
            goto done;
        /* Graph nodes are the scan's positions (for locality); back to hit indices. */
        for (q = 0; q < cs.n_cliques; q++) {
            for (e = cs.offsets[q]; e < cs.offsets[q + 1]; e++)
                cs.members[e] = g.node_hit[cs.members[e]];
            rsloc__sort_i32(cs.members + cs.offsets[q],
                            (size_t)(cs.offsets[q + 1] - cs.offsets[q]));
        }
    }
    if (rank_and_group(hits, dense, &cs, params, out) != RSLOC_OK)
        goto done;
    out->n_nodes = hits->n;
    out->n_suppressed = g.n_suppressed;
    out->n_edges = g.n_edges;
    out->n_maximal = cs.n_cliques;
    out->truncated = cs.truncated;
    rc = RSLOC_OK;
done:
    if (rc == RSLOC_ENOMEM)
        rsloc__fail(err, err_len, rc, "out of memory in the clique stage for %ld hits",
                    (long)hits->n);
    if (rc != RSLOC_OK)
        rsloc_geo_result_free(out);
    rsloc_clique_set_free(&cs);
    rsloc__geo_graph_free(&g);
    free(dense);
    return rc;
}

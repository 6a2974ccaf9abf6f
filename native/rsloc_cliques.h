/*
 * rsloc_cliques.h — the public API of rsloc's native clique library.
 *
 * Two levels:
 *   - rsloc_maximal_cliques: maximal cliques of an undirected graph given as an edge list
 *     (Bron–Kerbosch with Tomita pivoting over a degeneracy order);
 *   - rsloc_geo_cliques: stage 2 of rsloc, spatio-geographic maximal cliques of one query's
 *     retrieval candidates (see native/README.md for the exact rules).
 *
 * The two computing calls return an rsloc_status code; nothing aborts and no state is kept
 * between calls. Results are plain structs owned by the caller and released with their _free
 * function, which is also safe on a zeroed or already-freed struct. On error the output struct is
 * left zeroed and, when err is not NULL, err receives a one-line description (cut to err_len).
 */
#ifndef RSLOC_CLIQUES_H
#define RSLOC_CLIQUES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The declarations between the cffi markers are read verbatim by native/build_cffi.py. */
/* cffi:begin */
typedef enum {
    RSLOC_OK = 0,     /* success */
    RSLOC_EINVAL = 1, /* invalid argument: NULL pointer, NaN/inf, out-of-range value */
    RSLOC_ENOMEM = 2, /* an allocation failed */
    RSLOC_ELIMIT = 3  /* the input exceeds a configured work or size limit */
} rsloc_status;

/* A static one-line description of a status code. */
const char *rsloc_strerror(int code);

/* ---- generic maximal cliques ------------------------------------------------------------ */

typedef struct {
    int32_t min_size;    /* report maximal cliques with at least this many members (>= 1) */
    double min_ratio;    /* ... and at least min_ratio x the largest clique's size, in [0, 1] */
    int64_t max_cliques; /* stop once this many are stored and another is found (>= 1) */
    int64_t max_steps;   /* stop after this many search calls (>= 1) */
} rsloc_clique_params;

/* Defaults: min_size 3, min_ratio 0, max_cliques 1,000,000, max_steps 10,000,000. */
void rsloc_clique_params_default(rsloc_clique_params *params);

typedef struct {
    int64_t n_cliques;
    int64_t *offsets;   /* n_cliques + 1 entries; clique c is members[offsets[c]..offsets[c+1]) */
    int32_t *members;   /* each clique's node ids ascending; cliques in lexicographic order */
    int32_t truncated;  /* 1 when a limit stopped the search: more maximal cliques may exist */
} rsloc_clique_set;

/* Maximal cliques of size >= max(min_size, ceil(min_ratio x largest size)) of the graph on nodes
 * 0..n_nodes-1 whose edges are the n_edges pairs (edges[2k], edges[2k+1]); duplicate edges and
 * self-loops are ignored. params may be NULL for the defaults. Hitting max_cliques or max_steps
 * is not an error: the cliques found so far are returned with truncated = 1 (max_cliques counts
 * cliques that meet the threshold known when they are found). */
int rsloc_maximal_cliques(int32_t n_nodes, int64_t n_edges, const int32_t *edges,
                          const rsloc_clique_params *params, rsloc_clique_set *out,
                          char *err, size_t err_len);

void rsloc_clique_set_free(rsloc_clique_set *set);

/* ---- stage 2: spatio-geographic cliques ------------------------------------------------- */

typedef struct {
    int32_t n;            /* number of candidate hits */
    const int32_t *patch; /* query patch id of each hit (>= 0, any numbering) */
    const double *px;     /* patch centre in query pixels, x (columns) */
    const double *py;     /* patch centre in query pixels, y (rows) */
    const double *lon;    /* candidate tile centre, degrees, [-180, 180] */
    const double *lat;    /* candidate tile centre, degrees, [-90, 90] */
    const float *score;   /* retrieval similarity */
    double gsd_x;         /* query ground resolution along x, metres per pixel (> 0) */
    double gsd_y;         /* query ground resolution along y, metres per pixel (> 0) */
} rsloc_hits;

typedef struct {
    double tolerance_m;         /* max |ground distance - pixel distance x gsd| of an edge */
    double min_distance_m;      /* an edge's ground distance must exceed this */
    double suppress_ratio;      /* drop a hit outranked within this x tolerance in its patch */
    int32_t max_edges_per_node; /* edges a node picks (its best one per other patch, best first) */
    int64_t max_edges_total;    /* edges kept overall, best residual first */
    int32_t min_clique_size;    /* smallest maximal clique considered (>= 2) */
    int32_t top_n;              /* cliques kept after ranking, at most */
    double keep_ratio;          /* a kept clique has >= keep_ratio x the largest size */
    int64_t max_cliques;        /* maximal cliques stored, at most (then truncated = 1) */
    int64_t max_search_steps;   /* Bron-Kerbosch calls, at most (then truncated = 1) */
    int64_t max_pair_checks;    /* candidate pairs examined by the grid scan, else RSLOC_ELIMIT */
    int32_t max_nodes;          /* hits accepted, else RSLOC_ELIMIT */
} rsloc_geo_params;

/* Defaults (native/README.md says why): tolerance 1500 m, minimum distance 0 m and suppression
 * within 1 x tolerance (RSLoc z15 tiles are ~1 km: pass 1.5 tile sizes as tolerance_m), 256
 * edges per node, 4,000,000 edges, cliques of >= 3, the top 64 of >= 0.5 x the largest size,
 * 100,000 cliques, 10,000,000 search steps, 500,000,000 pair checks, 4,000,000 hits. */
void rsloc_geo_params_default(rsloc_geo_params *params);

typedef struct {
    int32_t n_nodes;            /* hits given */
    int32_t n_suppressed;       /* hits dropped as duplicates within their patch */
    int64_t n_edges;            /* edges of the graph after the budgets */
    int64_t n_maximal;          /* maximal cliques of >= max(min_clique_size, keep_ratio x the
                                   largest size): the candidates for keeping */
    int32_t truncated;          /* 1 when max_cliques or max_search_steps stopped the search */
    int32_t n_kept;             /* cliques kept, in rank order */
    int64_t *clique_offsets;    /* n_kept + 1; kept clique c is clique_members[off[c]..off[c+1]) */
    int32_t *clique_members;    /* hit indices, ascending within each clique */
    int32_t *clique_size;       /* n_kept */
    double *clique_mean_score;  /* n_kept: mean similarity of the members */
    int32_t *clique_group;      /* n_kept: group id; groups are numbered best first */
    int32_t n_groups;
    int32_t *group_score;       /* n_groups: distinct patches among the group's members */
    int32_t *candidate_score;   /* n_nodes: score of the hit's group, 0 when in none */
    int32_t *candidate_group;   /* n_nodes: the hit's group, -1 when in none */
    int32_t *ranking;           /* n_nodes: hit indices by candidate score, similarity, index */
} rsloc_geo_result;

/* Stage 2 for one query's hits. params may be NULL for the defaults. No hits, or hits of a
 * single patch, give a successful result without cliques. */
int rsloc_geo_cliques(const rsloc_hits *hits, const rsloc_geo_params *params,
                      rsloc_geo_result *out, char *err, size_t err_len);

void rsloc_geo_result_free(rsloc_geo_result *result);
/* cffi:end */

#ifdef __cplusplus
}
#endif

#endif /* RSLOC_CLIQUES_H */

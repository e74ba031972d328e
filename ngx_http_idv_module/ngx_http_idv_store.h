
/*
 * ngx_http_idv_module: the keyed store.
 *
 * The one place that keeps request state: rate-limit buckets, single
 * flights and cached answers, ownership records, replay guards, nonces.
 * A store is a named zone declared by a directive ("zone=NAME:SIZE"),
 * served by a backend (shared memory today; Redis next) behind the same
 * interface, so that no caller knows which backend answers.
 *
 * Callers describe what they want as a batch of operations on keys; the
 * batch runs atomically (one lock in shared memory, one script in Redis)
 * and may complete later: ngx_http_idv_store_run() returns NGX_AGAIN and
 * calls the batch's handler when the results are in.  Shared memory
 * always completes at once, but every caller is written for both.
 *
 * Keys are bytes of any length; a backend keeps a keyed 128-bit hash of
 * them (SipHash with a random key per zone), never the key itself.
 *
 * Every entry has a lifetime.  An entry whose loss is harmless (a cached
 * answer) is written without "keep" and may be evicted, least recently
 * used first, to make room; an entry whose loss would break a guarantee
 * (an in-flight marker, an ownership record, a nonce, a replay guard, a
 * bucket) is written with "keep" and stays until it expires.  A zone that
 * cannot make room fails the batch with NGX_HTTP_IDV_STORE_FULL: nothing
 * of it is applied, an [error] line names the zone, a counter counts it,
 * and the caller refuses the request (503 Gateway.StateFull).
 */


#ifndef _NGX_HTTP_IDV_STORE_H_INCLUDED_
#define _NGX_HTTP_IDV_STORE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/* operations */
#define NGX_HTTP_IDV_STORE_GET      1   /* the value, if the entry lives */
#define NGX_HTTP_IDV_STORE_ADD      2   /* create, only if absent */
#define NGX_HTTP_IDV_STORE_SET      3   /* create or replace */
#define NGX_HTTP_IDV_STORE_INCR     4   /* add delta to a counter (int64) */
#define NGX_HTTP_IDV_STORE_DELETE   5
#define NGX_HTTP_IDV_STORE_CAS      6   /* replace if the value is "expect" */
#define NGX_HTTP_IDV_STORE_BUCKET   7   /* leaky bucket: check and charge */
#define NGX_HTTP_IDV_STORE_CHECK    8   /* the value must begin with
                                           "expect" */

/* what a zone on a remote backend does when the backend fails a batch */
#define NGX_HTTP_IDV_STORE_CLOSED   1   /* the batch fails: refused */
#define NGX_HTTP_IDV_STORE_OPEN     2   /* as if nothing were there */
#define NGX_HTTP_IDV_STORE_LOCAL    3   /* run in the zone's memory */

/* a batch's outcome besides NGX_OK and NGX_ERROR */
#define NGX_HTTP_IDV_STORE_FULL     NGX_BUSY


typedef struct ngx_http_idv_store_s        ngx_http_idv_store_t;
typedef struct ngx_http_idv_store_batch_s  ngx_http_idv_store_batch_t;


/*
 * One operation.  Results:
 *
 *   rc      NGX_OK: done (GET found, ADD created, CAS replaced, DELETE
 *           removed, BUCKET admitted and charged, CHECK found a value
 *           that begins with "expect", or nothing and may);
 *           NGX_DECLINED: GET or DELETE found nothing, ADD found a live
 *           entry, CAS found another value or none, BUCKET refused,
 *           CHECK found another value, or nothing and "present" is set;
 *   value   GET and CHECK, and ADD/CAS when declined: the entry's current
 *           value, copied into the batch's pool;
 *   number  INCR: the counter after the increment; BUCKET: the bucket's
 *           level with this request, in milli-requests (as limit_req);
 *   age     GET, and ADD/CAS when declined: milliseconds since the
 *           entry was last written.
 *
 * Operations on the same key in one batch see each other's effect, in
 * order.  In an atomic batch with a declined ADD, CAS, BUCKET or CHECK
 * the other operations report what they would have done, and none of it
 * is done.
 *
 * A ttl of 0 is an entry that does not expire (it goes when deleted, or,
 * written without keep, when evicted).  INCR on an entry that is not an
 * 8-byte counter, and BUCKET on one that is not a bucket, are declined;
 * INCR keeps an existing counter's lifetime and class.
 */

typedef struct {
    ngx_http_idv_store_t       *store;
    ngx_uint_t                  op;
    ngx_str_t                   key;

    ngx_str_t                   value;      /* ADD, SET, CAS: to write */
    ngx_str_t                   expect;     /* CAS: the value replaced;
                                               DELETE: if set, delete only
                                               an entry of this value */
    ngx_msec_t                  ttl;        /* ADD, SET, CAS; INCR when it
                                               creates the counter */
    int64_t                     delta;      /* INCR */

    /* BUCKET: "rate" milli-requests per minute drain (not 0); a request
       costs 1000; refused when the level would exceed "burst"; a bucket
       is kept (never evicted) and lives until it has drained */
    ngx_uint_t                  rate;
    ngx_uint_t                  burst;
    ngx_uint_t                  cost;       /* 0: look, charge nothing */

    unsigned                    keep:1;     /* never evicted */
    unsigned                    fill:1;     /* BUCKET: raise the level to
                                               at least "cost", refuse
                                               nothing */
    unsigned                    present:1;  /* CHECK: absent is declined */

    /* results */
    ngx_int_t                   rc;
    ngx_str_t                   result;
    int64_t                     number;
    ngx_msec_t                  age;
} ngx_http_idv_store_op_t;


typedef void (*ngx_http_idv_store_handler_pt)(ngx_http_idv_store_batch_t *b);


struct ngx_http_idv_store_batch_s {
    ngx_http_idv_store_op_t    *ops;
    ngx_uint_t                  nops;

    ngx_pool_t                 *pool;       /* results are copied here */
    ngx_log_t                  *log;

    /*
     * called when a batch that returned NGX_AGAIN completes.  The batch
     * lives in its request's pool: a backend that answers later (Redis)
     * copies what it sends and calls no handler of a batch cancelled
     * with ngx_http_idv_store_cancel() (from the pool's cleanup).  A
     * batch without a handler is fire-and-forget.
     */
    ngx_http_idv_store_handler_pt  handler;
    void                       *data;

    void                       *running;    /* the backend's, while
                                               pending */

    /*
     * NGX_OK, NGX_HTTP_IDV_STORE_FULL (nothing was applied), or
     * NGX_ERROR (the backend failed: nothing may be assumed applied)
     */
    ngx_int_t                   rc;

    /*
     * all or nothing: when an ADD, CAS, BUCKET or CHECK of the batch is
     * declined, no write of the batch is applied (reads still report)
     */
    unsigned                    atomic:1;

    /*
     * a group (ngx_http_idv_store_run_group): the next batch, and this
     * one not run because an earlier one of the group declined
     */
    ngx_http_idv_store_batch_t *next;
    unsigned                    skipped:1;

    /* the caller's: the batch answers later and has not yet */
    unsigned                    pending:1;

    /* the caller's: a cleanup cancels the batch if its request ends */
    unsigned                    cleanup:1;
};


/* a backend: what a store needs to run batches and report itself */

typedef struct {
    const char                 *name;

    /* NGX_OK (b->rc set) or NGX_AGAIN (b->handler will be called) */
    ngx_int_t                 (*run)(ngx_http_idv_store_batch_t *b);

    /* occupancy for idv_zone_used_ratio, 0..1 */
    double                    (*used)(ngx_http_idv_store_t *st);

    /* counters: batches refused as full, entries evicted, entries */
    ngx_uint_t                (*full)(ngx_http_idv_store_t *st);
    ngx_uint_t                (*evicted)(ngx_http_idv_store_t *st);
    ngx_uint_t                (*entries)(ngx_http_idv_store_t *st);

    /* forget a pending batch (its request ended); NULL: never pending */
    void                      (*cancel)(ngx_http_idv_store_batch_t *b);
} ngx_http_idv_store_backend_t;


struct ngx_http_idv_store_s {
    ngx_str_t                   name;
    const char                 *kind;       /* "cache", "limit", ... */
    void                       *tag;        /* the declaring module */

    const ngx_http_idv_store_backend_t  *backend;
    void                       *data;       /* the zone's shared memory */
    ngx_shm_zone_t             *shm_zone;   /* always: entries, or the
                                               fallback of a remote
                                               backend, and counters */

    ngx_str_t                   remote_name;    /* "store=redis:NAME" */
    void                       *remote;     /* the remote backend's */
    ngx_uint_t                  on_error;   /* NGX_HTTP_IDV_STORE_CLOSED..*/
};


/* what a zone directive declared, before the store exists */

typedef struct {
    ngx_str_t                   name;
    ssize_t                     size;
    ngx_str_t                   remote;     /* "store=redis:NAME" */
    ngx_uint_t                  on_error;   /* 0: the kind's default */
} ngx_http_idv_store_conf_t;


/*
 * Parses a parameter of a zone directive that belongs to the store
 * ("zone=NAME:SIZE", "store=redis:NAME", "on_error=closed|open|local"):
 * NGX_OK when taken, NGX_DECLINED when it is the
 * caller's, NGX_ERROR after an [emerg].
 */
ngx_int_t ngx_http_idv_store_param(ngx_conf_t *cf,
    ngx_http_idv_store_conf_t *sc, ngx_str_t *value);

/*
 * Declares the store once every parameter is parsed: refuses a missing
 * zone=, a duplicate name, and a size change on reload (the same message
 * for every kind of zone); a zone of the same name and size is reused
 * with its entries across reloads.  A zone on Redis fails closed unless
 * on_error= says otherwise; limit zones fall back to their memory.
 */
ngx_http_idv_store_t *ngx_http_idv_store_add(ngx_conf_t *cf,
    ngx_http_idv_store_conf_t *sc, const char *kind, void *tag);

/*
 * On reload: NGX_OK unless the running configuration has a zone of this
 * name and module with another size (NGX_ERROR after the [emerg] every
 * kind of zone gives); for zones that are not stores too.
 */
ngx_int_t ngx_http_idv_store_same_size(ngx_conf_t *cf, ngx_str_t *name,
    size_t size, const char *kind, void *tag);

/*
 * A zone directive as a whole: its parameters ("zone=NAME:SIZE", and
 * "ttl=TIME", at least a second, where ttl is not NULL: it holds the
 * default), then the store declared.  Every zone directive reads alike
 * and says alike what is wrong.
 */
ngx_http_idv_store_t *ngx_http_idv_store_zone(ngx_conf_t *cf,
    const char *kind, void *tag, ngx_msec_t *ttl);

/* a store declared in this configuration, by name and declaring module */
ngx_http_idv_store_t *ngx_http_idv_store_find(ngx_conf_t *cf,
    ngx_str_t *name, void *tag);

/* every store of the running configuration (for metrics), or NULL */
ngx_array_t *ngx_http_idv_store_all(void);

/*
 * Runs a batch: NGX_AGAIN when b->handler will be called with the
 * results, else the batch's outcome, b->rc (NGX_OK,
 * NGX_HTTP_IDV_STORE_FULL or NGX_ERROR).  A batch whose operations name
 * stores of different backends is refused (NGX_ERROR and an [alert]).
 */
ngx_int_t ngx_http_idv_store_run(ngx_http_idv_store_batch_t *b);

/*
 * Runs a group of batches (linked by "next", on one backend) in order,
 * in one round trip where the backend is remote: a batch that has a
 * declined ADD, CAS, BUCKET or CHECK is the last one run, those after it
 * are marked skipped (rc NGX_DECLINED, nothing reported).  The first
 * batch's handler is called once, when every batch has its outcome;
 * NGX_AGAIN, or NGX_OK with every batch's rc set.
 */
ngx_int_t ngx_http_idv_store_run_group(ngx_http_idv_store_batch_t *first);

/* the batch has a declined ADD, CAS, BUCKET or CHECK */
ngx_uint_t ngx_http_idv_store_declined(ngx_http_idv_store_batch_t *b);

/* forgets a pending batch: its handler will not be called */
void ngx_http_idv_store_cancel(ngx_http_idv_store_batch_t *b);

/*
 * A batch (or group) its remote backend could not run, settled by its
 * zones' on_error policies: b->rc NGX_ERROR if any zone is closed; otherwise
 * the operations of "local" zones run in their zones' memory (as one
 * batch), those of "open" zones report what an empty store would (GET
 * finds nothing; ADD, SET, CAS, DELETE, INCR and BUCKET succeed) and
 * change nothing.  Counted per zone.  Returns NGX_OK.
 */
ngx_int_t ngx_http_idv_store_fallback(ngx_http_idv_store_batch_t *b);

/* batches refused as full, counted in the zone's memory */
ngx_uint_t ngx_http_idv_store_full(ngx_http_idv_store_t *st);

/* a batch its remote backend refused for lack of memory, counted */
void ngx_http_idv_store_count_full(ngx_http_idv_store_t *st);

/* batches of the zone its backend failed, for metrics */
ngx_uint_t ngx_http_idv_store_unavailable(ngx_http_idv_store_t *st);

/*
 * Once the http block is read, before any location is merged: every zone
 * with "store=redis:NAME" gets the Redis backend (ngx_http_idv_redis_module.c),
 * or nginx -t says the name is unknown.
 */
ngx_int_t ngx_http_idv_redis_attach(ngx_conf_t *cf);

/* the share of a shared memory zone's pages in use, 0..1 (zones that are
   not stores yet report this too) */
double ngx_http_idv_store_slab_used(ngx_shm_zone_t *shm_zone);


#endif /* _NGX_HTTP_IDV_STORE_H_INCLUDED_ */

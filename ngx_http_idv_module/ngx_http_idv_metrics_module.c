
/*
 * ngx_http_idv_module: metrics.
 *
 * Counters in shared memory, added to by every worker in the log phase
 * (atomic increments; a mutex only to claim a new label set) and served
 * in the Prometheus text format by idv_metrics.  The zone is reused
 * across reloads, so counters survive them.  Label cardinality is bounded
 * by construction, whatever the clients send: actions come from the
 * operations table, products from the codes each action documents
 * (others count as "other"), result codes are short visible ASCII or
 * "other", and tenants take at most idv_metrics_zone's tenants= slots
 * under a sanitised name (later ones and junk count as "other").  A
 * series once claimed is never given up; when the table is full, a new
 * label set counts in its action's overflow series, product="other",
 * code="other", which is reserved outside the table.
 */


#include "ngx_http_idv_module.h"
#include "ngx_http_idv_metrics.h"
#include "ngx_http_idv_store.h"
#include "ngx_http_idv_credentials.h"


#define NGX_HTTP_IDV_M_OPS        64
#define NGX_HTTP_IDV_M_BUCKETS    10
#define NGX_HTTP_IDV_M_SERIES     512
#define NGX_HTTP_IDV_M_STATUSES   32
#define NGX_HTTP_IDV_M_PRODUCT    32
#define NGX_HTTP_IDV_M_CODE       64
#define NGX_HTTP_IDV_M_TENANT     64


typedef struct {
    ngx_atomic_t                count;
    ngx_uint_t                  used;
    ngx_uint_t                  op;
    u_char                      product_len;
    u_char                      code_len;
    u_char                      product[NGX_HTTP_IDV_M_PRODUCT];
    u_char                      code[NGX_HTTP_IDV_M_CODE];
} ngx_http_idv_m_series_t;


typedef struct {
    ngx_atomic_t                count;
    ngx_uint_t                  kind;
    u_char                      len;
    u_char                      value[24];
} ngx_http_idv_m_status_t;


typedef struct {
    ngx_atomic_t                requests;
    ngx_atomic_t                throttled;
    u_char                      len;
    u_char                      name[NGX_HTTP_IDV_M_TENANT];
} ngx_http_idv_m_tenant_t;


typedef struct {
    ngx_atomic_t                upstream[NGX_HTTP_IDV_M_OPS]
                                        [NGX_HTTP_IDV_M_BUCKETS];
    ngx_atomic_t                upstream_ms[NGX_HTTP_IDV_M_OPS];
    ngx_atomic_t                upstream_count[NGX_HTTP_IDV_M_OPS];
    ngx_atomic_t                retries[NGX_HTTP_IDV_M_OPS];
    ngx_atomic_t                events[NGX_HTTP_IDV_M_EVENTS];

    ngx_http_idv_m_status_t     statuses[NGX_HTTP_IDV_M_STATUSES];
    ngx_http_idv_m_series_t     series[NGX_HTTP_IDV_M_SERIES];

    /* product="other", code="other", and what a full table turns away */
    ngx_atomic_t                overflow[NGX_HTTP_IDV_M_OPS];

    ngx_uint_t                  ntenants;       /* slots, "other" last */
    ngx_http_idv_m_tenant_t     tenants[1];
} ngx_http_idv_m_shctx_t;


typedef struct {
    ngx_shm_zone_t             *shm_zone;
    ngx_http_idv_m_shctx_t     *sh;
    ngx_slab_pool_t            *shpool;
    ngx_uint_t                  ntenants;
    ngx_int_t                   cache_index;
    ngx_int_t                   limit_index;
} ngx_http_idv_m_main_conf_t;


/* a zone of the module that is not a store (yet), by its module */
typedef struct {
    ngx_module_t               *module;
    const char                 *kind;
} ngx_http_idv_m_zone_t;


enum {
    NGX_HTTP_IDV_M_KIND_CACHE = 0,
    NGX_HTTP_IDV_M_KIND_LIMIT
};


static ngx_int_t ngx_http_idv_m_log(ngx_http_request_t *r);
static void ngx_http_idv_m_product(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_str_t *label);
static void ngx_http_idv_m_count(ngx_http_idv_m_main_conf_t *mmcf,
    ngx_uint_t op, ngx_str_t *product, ngx_str_t *code);
static void ngx_http_idv_m_tenant(ngx_http_idv_m_main_conf_t *mmcf,
    ngx_str_t *tenant, ngx_uint_t throttled);
static size_t ngx_http_idv_m_tenant_label(ngx_str_t *tenant, u_char *buf);
static ngx_uint_t ngx_http_idv_m_sane(u_char *s, size_t len, size_t max);
static size_t ngx_http_idv_m_utf8(u_char *p, u_char *last);
static void ngx_http_idv_m_status(ngx_http_idv_m_main_conf_t *mmcf,
    ngx_uint_t kind, ngx_str_t *value);
static ngx_int_t ngx_http_idv_m_handler(ngx_http_request_t *r);
static size_t ngx_http_idv_m_zones_size(void);
static u_char *ngx_http_idv_m_zones(u_char *p, u_char *end);
static u_char *ngx_http_idv_m_legacy_zones(u_char *p, u_char *end,
    ngx_http_idv_store_t **st, ngx_uint_t nstores);
static u_char *ngx_http_idv_m_sample(u_char *p, u_char *end,
    const char *name, ngx_str_t *zone, const char *kind, const char *fmt,
    ...);
static u_char *ngx_http_idv_m_label(u_char *p, u_char *end, u_char *s,
    size_t len);
static ngx_int_t ngx_http_idv_m_init_zone(ngx_shm_zone_t *shm_zone,
    void *data);
static ngx_int_t ngx_http_idv_m_find_var(ngx_conf_t *cf, char *name);
static void *ngx_http_idv_m_create_main_conf(ngx_conf_t *cf);
static char *ngx_http_idv_m_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static char *ngx_http_idv_m_metrics(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_idv_m_add_zone(ngx_conf_t *cf,
    ngx_http_idv_m_main_conf_t *mmcf, ssize_t size);
static ngx_int_t ngx_http_idv_m_init(ngx_conf_t *cf);


static ngx_command_t  ngx_http_idv_m_commands[] = {

    { ngx_string("idv_metrics_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_TAKE12,
      ngx_http_idv_m_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("idv_metrics"),
      NGX_HTTP_LOC_CONF|NGX_CONF_NOARGS,
      ngx_http_idv_m_metrics,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_idv_metrics_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_idv_m_init,                   /* postconfiguration */

    ngx_http_idv_m_create_main_conf,       /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    NULL,                                  /* create location configuration */
    NULL                                   /* merge location configuration */
};


ngx_module_t  ngx_http_idv_metrics_module = {
    NGX_MODULE_V1,
    &ngx_http_idv_metrics_module_ctx,      /* module context */
    ngx_http_idv_m_commands,               /* module directives */
    NGX_HTTP_MODULE,                       /* module type */
    NULL,                                  /* init master */
    NULL,                                  /* init module */
    NULL,                                  /* init process */
    NULL,                                  /* init thread */
    NULL,                                  /* exit thread */
    NULL,                                  /* exit process */
    NULL,                                  /* exit master */
    NGX_MODULE_V1_PADDING
};


/* upper bounds of the latency buckets, ms; the last one is +Inf */
static ngx_msec_t  ngx_http_idv_m_bounds[NGX_HTTP_IDV_M_BUCKETS - 1] = {
    50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000
};

static const char *ngx_http_idv_m_bound_text[NGX_HTTP_IDV_M_BUCKETS] = {
    "0.05", "0.1", "0.25", "0.5", "1", "2.5", "5", "10", "30", "+Inf"
};

static const char *ngx_http_idv_m_event_names[NGX_HTTP_IDV_M_EVENTS] = {
    "verified", "forwarded", "kept", "duplicate", "backend_error",
    "malformed", "forged", "expired", "foreign", "unconfirmed"
};

static ngx_str_t  ngx_http_idv_m_type =
    ngx_string("text/plain; version=0.0.4");


/* the one zone that is not a store is reported from its pool */
static ngx_http_idv_m_zone_t  ngx_http_idv_m_legacy[] = {
    { &ngx_http_idv_metrics_module, "metrics" },
    { NULL, NULL }
};


void
ngx_http_idv_metrics_event(ngx_http_request_t *r, ngx_uint_t event)
{
    ngx_http_idv_m_main_conf_t  *mmcf;

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_idv_metrics_module);

    if (mmcf->sh && event < NGX_HTTP_IDV_M_EVENTS) {
        (void) ngx_atomic_fetch_add(&mmcf->sh->events[event], 1);
    }
}


static ngx_int_t
ngx_http_idv_m_log(ngx_http_request_t *r)
{
    ngx_str_t                    product, code;
    ngx_uint_t                   op, b, throttled;
    ngx_http_idv_ctx_t          *ctx;
    ngx_http_variable_value_t   *v;
    ngx_http_idv_m_shctx_t      *sh;
    ngx_http_idv_m_main_conf_t  *mmcf;

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_idv_metrics_module);
    sh = mmcf->sh;

    if (sh == NULL || r != r->main) {
        return NGX_OK;
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_idv_module);

    if (ctx == NULL || ctx->conf == NULL || ctx->conf->op == NULL) {
        return NGX_OK;
    }

    op = ctx->conf->op - ngx_http_idv_ops;

    if (op >= NGX_HTTP_IDV_M_OPS) {
        return NGX_OK;
    }

    /* requests by action, product and result code */

    ngx_http_idv_m_product(r, ctx, &product);

    if (ctx->code.len == 0) {
        ngx_str_set(&code, "none");

    } else if (ngx_http_idv_m_sane(ctx->code.data, ctx->code.len,
                                   NGX_HTTP_IDV_M_CODE))
    {
        code = ctx->code;

    } else {
        ngx_str_set(&code, "other");
    }

    ngx_http_idv_m_count(mmcf, op, &product, &code);

    /* the upstream call: latency of the last attempt, retries */

    if (ctx->attempts) {
        for (b = 0; b < NGX_HTTP_IDV_M_BUCKETS - 1; b++) {
            if (ctx->upstream_time <= ngx_http_idv_m_bounds[b]) {
                break;
            }
        }

        (void) ngx_atomic_fetch_add(&sh->upstream[op][b], 1);
        (void) ngx_atomic_fetch_add(&sh->upstream_ms[op],
                                    ctx->upstream_time);
        (void) ngx_atomic_fetch_add(&sh->upstream_count[op], 1);

        if (ctx->attempts > 1) {
            (void) ngx_atomic_fetch_add(&sh->retries[op], ctx->attempts - 1);
        }
    }

    /* cache and limit outcomes, from their variables */

    throttled = (r->headers_out.status == NGX_HTTP_TOO_MANY_REQUESTS);

    if (mmcf->cache_index != NGX_ERROR) {
        v = ngx_http_get_indexed_variable(r, mmcf->cache_index);

        if (v && !v->not_found && v->len) {
            ngx_http_idv_m_status(mmcf, NGX_HTTP_IDV_M_KIND_CACHE,
                                  &(ngx_str_t) { v->len, v->data });
        }
    }

    if (mmcf->limit_index != NGX_ERROR) {
        v = ngx_http_get_indexed_variable(r, mmcf->limit_index);

        if (v && !v->not_found && v->len) {
            ngx_http_idv_m_status(mmcf, NGX_HTTP_IDV_M_KIND_LIMIT,
                                  &(ngx_str_t) { v->len, v->data });
        }
    }

    if (ctx->tenant.len && sh->ntenants) {
        ngx_http_idv_m_tenant(mmcf, &ctx->tenant, throttled);
    }

    return NGX_OK;
}


/*
 * The product label: a code the operations table documents for the
 * action; for an action that takes a ProductCode whose values are not
 * documented, the location's own idv_product_code (the operator's, so
 * bounded by the configuration); empty without a ProductCode.  Any other
 * value, which the client chose, is "other".
 */

static void
ngx_http_idv_m_product(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_str_t *label)
{
    ngx_str_t                *product;
    ngx_http_idv_param_t     *p;
    const ngx_http_idv_op_t  *op;
    ngx_http_idv_loc_conf_t  *ilcf;

    op = ctx->conf->op;

    /*
     * the location's code, or the one the request sent (taken, or
     * refused as one the action does not document)
     */

    product = ctx->conf->product.len ? &ctx->conf->product
                                     : ngx_http_idv_ngx_str(&ctx->req.product);

    if (product->len == 0 && ctx->req.nparams) {
        p = ngx_http_idv_req_get(&ctx->req, "ProductCode");

        if (p) {
            product = ngx_http_idv_ngx_str(&p->value);
        }
    }

    if (product->len == 0) {
        ngx_str_set(label, "");
        return;
    }

    if (ngx_http_idv_m_sane(product->data, product->len,
                            NGX_HTTP_IDV_M_PRODUCT))
    {
        if (op->products) {
            if (ngx_http_idv_op_product_known(op, product->data,
                                              product->len))
            {
                *label = *product;
                return;
            }

        } else {
            ilcf = ngx_http_get_module_loc_conf(r, ngx_http_idv_module);

            if (ilcf->product.len == product->len
                && ngx_memcmp(ilcf->product.data, product->data,
                              product->len)
                   == 0)
            {
                *label = *product;
                return;
            }
        }
    }

    ngx_str_set(label, "other");
}


/*
 * A label set claims its series for good, so that no traffic can displace
 * a series already counted.  When the table is full, a new label set
 * counts in the action's overflow series, which is not in the table: the
 * one of product="other", code="other" itself.
 */

static void
ngx_http_idv_m_count(ngx_http_idv_m_main_conf_t *mmcf, ngx_uint_t op,
    ngx_str_t *product, ngx_str_t *code)
{
    uint32_t                  hash;
    ngx_uint_t                i;
    ngx_http_idv_m_series_t  *s;
    ngx_http_idv_m_shctx_t   *sh;

    sh = mmcf->sh;

    if (product->len == 5 && ngx_strncmp(product->data, "other", 5) == 0
        && code->len == 5 && ngx_strncmp(code->data, "other", 5) == 0)
    {
        goto overflow;
    }

    hash = ngx_crc32_short(code->data, code->len)
           ^ (uint32_t) op * 2654435761u
           ^ (product->len ? ngx_crc32_short(product->data, product->len)
                           : 0);

    for (i = 0; i < NGX_HTTP_IDV_M_SERIES; i++) {
        s = &sh->series[(hash + i) % NGX_HTTP_IDV_M_SERIES];

        if (!s->used) {
            ngx_shmtx_lock(&mmcf->shpool->mutex);

            if (!s->used) {
                s->op = op;
                s->product_len = (u_char) product->len;
                s->code_len = (u_char) code->len;
                (void) ngx_http_idv_cpymem(s->product, product->data,
                                           product->len);
                (void) ngx_http_idv_cpymem(s->code, code->data, code->len);
                ngx_memory_barrier();
                s->used = 1;
            }

            ngx_shmtx_unlock(&mmcf->shpool->mutex);
        }

        if (s->op == op
            && s->product_len == product->len
            && s->code_len == code->len
            && ngx_http_idv_memeq(s->product, product->data, product->len)
            && ngx_http_idv_memeq(s->code, code->data, code->len))
        {
            (void) ngx_atomic_fetch_add(&s->count, 1);
            return;
        }
    }

overflow:

    (void) ngx_atomic_fetch_add(&sh->overflow[op], 1);
}


/* per tenant: the first names to claim a slot, then "other" */

static void
ngx_http_idv_m_tenant(ngx_http_idv_m_main_conf_t *mmcf, ngx_str_t *tenant,
    ngx_uint_t throttled)
{
    u_char                    name[NGX_HTTP_IDV_M_TENANT];
    size_t                    len;
    ngx_uint_t                i;
    ngx_http_idv_m_tenant_t  *t;
    ngx_http_idv_m_shctx_t   *sh;

    sh = mmcf->sh;
    t = &sh->tenants[sh->ntenants - 1];

    len = ngx_http_idv_m_tenant_label(tenant, name);

    for (i = 0; len && i + 1 < sh->ntenants; i++) {

        if (sh->tenants[i].len == 0) {
            ngx_shmtx_lock(&mmcf->shpool->mutex);

            if (sh->tenants[i].len == 0) {
                ngx_memcpy(sh->tenants[i].name, name, len);
                ngx_memory_barrier();
                sh->tenants[i].len = (u_char) len;
            }

            ngx_shmtx_unlock(&mmcf->shpool->mutex);
        }

        if (sh->tenants[i].len == len
            && ngx_memcmp(sh->tenants[i].name, name, len) == 0)
        {
            t = &sh->tenants[i];
            break;
        }
    }

    (void) ngx_atomic_fetch_add(&t->requests, 1);

    if (throttled) {
        (void) ngx_atomic_fetch_add(&t->throttled, 1);
    }
}


/*
 * The tenant's label in buf, at most NGX_HTTP_IDV_M_TENANT bytes, or 0
 * for "other".  Bytes of [A-Za-z0-9._:@-] are kept, every other byte of
 * valid UTF-8 becomes "_" (no escapes, no look-alike or bidirectional
 * characters on a dashboard); a longer name keeps its first bytes and
 * ends in "-" and its CRC-32 in hex, so that long names sharing a prefix
 * stay apart.  A name with a control byte or invalid UTF-8 is no
 * configured tenant's: it takes no slot.
 */

static size_t
ngx_http_idv_m_tenant_label(ngx_str_t *tenant, u_char *buf)
{
    u_char  *p, *last, c;
    size_t   n, len;

    p = tenant->data;
    last = p + tenant->len;

    for ( /* void */ ; p < last; p += n) {
        if (*p < 0x20 || *p == 0x7f) {
            return 0;
        }

        n = ngx_http_idv_m_utf8(p, last);

        if (n == 0) {
            return 0;
        }
    }

    len = ngx_min(tenant->len, NGX_HTTP_IDV_M_TENANT);

    for (n = 0; n < len; n++) {
        c = tenant->data[n];

        buf[n] = (ngx_http_idv_m_sane(&c, 1, 1) || c == ':' || c == '@')
                 ? c : '_';
    }

    if (tenant->len > NGX_HTTP_IDV_M_TENANT) {
        len = NGX_HTTP_IDV_M_TENANT - 9;
        (void) ngx_sprintf(buf + len, "-%08xD",
                           ngx_crc32_long(tenant->data, tenant->len));
        len = NGX_HTTP_IDV_M_TENANT;
    }

    /* the name of the overflow series is not a tenant's */

    if (len == 5 && ngx_strncmp(buf, "other", 5) == 0) {
        return 0;
    }

    return len;
}


/* a short label of visible ASCII: [A-Za-z0-9._-]{1,max} */

static ngx_uint_t
ngx_http_idv_m_sane(u_char *s, size_t len, size_t max)
{
    size_t  i;

    if (len == 0 || len > max) {
        return 0;
    }

    for (i = 0; i < len; i++) {
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z')
              || (s[i] >= '0' && s[i] <= '9')
              || s[i] == '.' || s[i] == '_' || s[i] == '-'))
        {
            return 0;
        }
    }

    return 1;
}


/*
 * The length of the well-formed UTF-8 sequence at p (RFC 3629: no
 * overlong forms, no surrogates, nothing above U+10FFFF), or 0.
 * ngx_utf8_decode() is laxer than Prometheus.
 */

static size_t
ngx_http_idv_m_utf8(u_char *p, u_char *last)
{
    size_t  n, i;
    u_char  lo, hi;

    if (*p < 0x80) {
        return 1;
    }

    lo = 0x80;
    hi = 0xbf;

    if (*p >= 0xc2 && *p <= 0xdf) {
        n = 2;

    } else if (*p >= 0xe0 && *p <= 0xef) {
        n = 3;
        lo = (*p == 0xe0) ? 0xa0 : 0x80;
        hi = (*p == 0xed) ? 0x9f : 0xbf;

    } else if (*p >= 0xf0 && *p <= 0xf4) {
        n = 4;
        lo = (*p == 0xf0) ? 0x90 : 0x80;
        hi = (*p == 0xf4) ? 0x8f : 0xbf;

    } else {
        return 0;
    }

    if ((size_t) (last - p) < n || p[1] < lo || p[1] > hi) {
        return 0;
    }

    for (i = 2; i < n; i++) {
        if (p[i] < 0x80 || p[i] > 0xbf) {
            return 0;
        }
    }

    return n;
}


static void
ngx_http_idv_m_status(ngx_http_idv_m_main_conf_t *mmcf, ngx_uint_t kind,
    ngx_str_t *value)
{
    size_t                    len;
    ngx_uint_t                i;
    ngx_http_idv_m_status_t  *s;

    len = ngx_min(value->len, 24);

    for (i = 0; i < NGX_HTTP_IDV_M_STATUSES; i++) {
        s = &mmcf->sh->statuses[i];

        if (s->len == 0) {
            ngx_shmtx_lock(&mmcf->shpool->mutex);

            if (s->len == 0) {
                s->kind = kind;
                ngx_memcpy(s->value, value->data, len);
                ngx_memory_barrier();
                s->len = (u_char) len;
            }

            ngx_shmtx_unlock(&mmcf->shpool->mutex);
        }

        if (s->kind == kind && s->len == len
            && ngx_memcmp(s->value, value->data, len) == 0)
        {
            (void) ngx_atomic_fetch_add(&s->count, 1);
            return;
        }
    }
}


/* Prometheus text format, version 0.0.4 */

static ngx_int_t
ngx_http_idv_m_handler(ngx_http_request_t *r)
{
    u_char                      *p, *end;
    size_t                       size;
    ngx_int_t                    rc;
    ngx_buf_t                   *b;
    ngx_uint_t                   i, j, k, cum;
    ngx_chain_t                  out;
    ngx_http_idv_m_series_t     *s;
    ngx_http_idv_m_status_t     *st;
    ngx_http_idv_m_tenant_t     *t;
    ngx_http_idv_m_shctx_t      *sh;
    ngx_http_idv_m_main_conf_t  *mmcf;
    const ngx_http_idv_op_t     *op;

    if (!(r->method & (NGX_HTTP_GET|NGX_HTTP_HEAD))) {
        return NGX_HTTP_NOT_ALLOWED;
    }

    rc = ngx_http_discard_request_body(r);
    if (rc != NGX_OK) {
        return rc;
    }

    mmcf = ngx_http_get_module_main_conf(r, ngx_http_idv_metrics_module);
    sh = mmcf->sh;

    size = 8192
           + NGX_HTTP_IDV_M_SERIES * (128 + NGX_HTTP_IDV_M_PRODUCT
                                      + NGX_HTTP_IDV_M_CODE * 6)
           + ngx_http_idv_nops * (NGX_HTTP_IDV_M_BUCKETS + 5) * 128
           + NGX_HTTP_IDV_M_STATUSES * 128
           + NGX_HTTP_IDV_M_EVENTS * 96
           + sh->ntenants * 2 * (96 + NGX_HTTP_IDV_M_TENANT * 6)
           + ngx_http_idv_m_zones_size()
           + ngx_http_idv_credentials_metrics_size();

    b = ngx_create_temp_buf(r->pool, size);
    if (b == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    p = b->last;
    end = b->end;

    p = ngx_slprintf(p, end,
                     "# HELP idv_requests_total Requests answered by the "
                     "gateway, by action, product code and result code.\n"
                     "# TYPE idv_requests_total counter\n");

    for (i = 0; i < NGX_HTTP_IDV_M_SERIES; i++) {
        s = &sh->series[i];

        if (!s->used || s->op >= ngx_http_idv_nops) {
            continue;
        }

        op = &ngx_http_idv_ops[s->op];

        p = ngx_slprintf(p, end, "idv_requests_total{action=\"%V\","
                         "product=\"", ngx_http_idv_ngx_str(&op->name));
        p = ngx_http_idv_m_label(p, end, s->product, s->product_len);
        p = ngx_slprintf(p, end, "\",code=\"");
        p = ngx_http_idv_m_label(p, end, s->code, s->code_len);
        p = ngx_slprintf(p, end, "\"} %uA\n", s->count);
    }

    for (i = 0; i < ngx_http_idv_nops && i < NGX_HTTP_IDV_M_OPS; i++) {
        if (sh->overflow[i] == 0) {
            continue;
        }

        p = ngx_slprintf(p, end, "idv_requests_total{action=\"%V\","
                         "product=\"other\",code=\"other\"} %uA\n",
                         ngx_http_idv_ngx_str(&ngx_http_idv_ops[i].name),
                         sh->overflow[i]);
    }

    p = ngx_slprintf(p, end,
                     "# HELP idv_upstream_duration_seconds Time of the "
                     "upstream call (last attempt), by action.\n"
                     "# TYPE idv_upstream_duration_seconds histogram\n");

    for (i = 0; i < ngx_http_idv_nops && i < NGX_HTTP_IDV_M_OPS; i++) {
        if (sh->upstream_count[i] == 0) {
            continue;
        }

        op = &ngx_http_idv_ops[i];
        cum = 0;

        for (j = 0; j < NGX_HTTP_IDV_M_BUCKETS; j++) {
            cum += sh->upstream[i][j];
            p = ngx_slprintf(p, end, "idv_upstream_duration_seconds_bucket"
                             "{action=\"%V\",le=\"%s\"} %ui\n",
                             ngx_http_idv_ngx_str(&op->name),
                             ngx_http_idv_m_bound_text[j], cum);
        }

        p = ngx_slprintf(p, end, "idv_upstream_duration_seconds_sum"
                         "{action=\"%V\"} %uA.%03uA\n"
                         "idv_upstream_duration_seconds_count"
                         "{action=\"%V\"} %uA\n",
                         ngx_http_idv_ngx_str(&op->name),
                         sh->upstream_ms[i] / 1000, sh->upstream_ms[i] % 1000,
                         ngx_http_idv_ngx_str(&op->name),
                         sh->upstream_count[i]);
    }

    p = ngx_slprintf(p, end,
                     "# HELP idv_upstream_retries_total Upstream calls "
                     "repeated after a retryable failure, by action.\n"
                     "# TYPE idv_upstream_retries_total counter\n");

    for (i = 0; i < ngx_http_idv_nops && i < NGX_HTTP_IDV_M_OPS; i++) {
        if (sh->upstream_count[i] == 0) {
            continue;
        }

        p = ngx_slprintf(p, end, "idv_upstream_retries_total{action=\"%V\"} "
                         "%uA\n",
                         ngx_http_idv_ngx_str(&ngx_http_idv_ops[i].name),
                         sh->retries[i]);
    }

    for (k = 0; k < 2; k++) {
        p = ngx_slprintf(p, end, k == NGX_HTTP_IDV_M_KIND_CACHE
                         ? "# HELP idv_cache_requests_total Requests by "
                           "$idv_cache_status (HIT, MISS, ...).\n"
                           "# TYPE idv_cache_requests_total counter\n"
                         : "# HELP idv_limit_requests_total Requests by "
                           "$idv_limit_status (PASSED, REJECTED, ...).\n"
                           "# TYPE idv_limit_requests_total counter\n");

        for (i = 0; i < NGX_HTTP_IDV_M_STATUSES; i++) {
            st = &sh->statuses[i];

            if (st->len == 0 || st->kind != k) {
                continue;
            }

            p = ngx_slprintf(p, end, k == NGX_HTTP_IDV_M_KIND_CACHE
                             ? "idv_cache_requests_total{status=\""
                             : "idv_limit_requests_total{status=\"");
            p = ngx_http_idv_m_label(p, end, st->value, st->len);
            p = ngx_slprintf(p, end, "\"} %uA\n", st->count);
        }
    }

    p = ngx_slprintf(p, end,
                     "# HELP idv_callbacks_total Result callbacks, by "
                     "outcome (rejections by reason).\n"
                     "# TYPE idv_callbacks_total counter\n");

    for (i = 0; i < NGX_HTTP_IDV_M_EVENTS; i++) {
        p = ngx_slprintf(p, end, "idv_callbacks_total{outcome=\"%s\"} %uA\n",
                         ngx_http_idv_m_event_names[i], sh->events[i]);
    }

    p = ngx_slprintf(p, end,
                     "# HELP idv_tenant_requests_total Requests by tenant "
                     "(the first tenants seen; the rest as \"other\").\n"
                     "# TYPE idv_tenant_requests_total counter\n");

    for (k = 0; k < 2; k++) {
        if (k == 1) {
            p = ngx_slprintf(p, end,
                             "# HELP idv_tenant_throttled_total Requests "
                             "answered 429, by tenant.\n"
                             "# TYPE idv_tenant_throttled_total counter\n");
        }

        for (i = 0; i < sh->ntenants; i++) {
            t = &sh->tenants[i];

            if (t->len == 0 && i + 1 < sh->ntenants) {
                continue;
            }

            p = ngx_slprintf(p, end, k ? "idv_tenant_throttled_total"
                                         "{tenant=\""
                                       : "idv_tenant_requests_total"
                                         "{tenant=\"");

            if (i + 1 == sh->ntenants) {
                p = ngx_slprintf(p, end, "other");

            } else {
                p = ngx_http_idv_m_label(p, end, t->name, t->len);
            }

            p = ngx_slprintf(p, end, "\"} %uA\n",
                             k ? t->throttled : t->requests);
        }
    }

    p = ngx_http_idv_m_zones(p, end);
    p = ngx_http_idv_credentials_metrics(p, end);

    b->last = p;
    b->last_buf = 1;
    b->last_in_chain = 1;

    r->headers_out.status = NGX_HTTP_OK;
    r->headers_out.content_type = ngx_http_idv_m_type;
    r->headers_out.content_type_len = ngx_http_idv_m_type.len;
    r->headers_out.content_length_n = b->last - b->pos;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    out.buf = b;
    out.next = NULL;

    return ngx_http_output_filter(r, &out);
}


/* the room the zones' lines may take */

static size_t
ngx_http_idv_m_zones_size(void)
{
    size_t            size;
    ngx_uint_t        i;
    ngx_shm_zone_t   *zone;
    ngx_list_part_t  *part;

    size = 4 * 256;
    part = &((ngx_cycle_t *) ngx_cycle)->shared_memory.part;

    for ( /* void */ ; part; part = part->next) {
        zone = part->elts;

        for (i = 0; i < part->nelts; i++) {
            size += 4 * (128 + 2 * zone[i].shm.name.len);
        }
    }

    return size;
}


/*
 * Every zone's occupancy: the stores' from their backends, with their
 * counters; the zones of modules not on the store yet from their slab
 * pools.
 */

static u_char *
ngx_http_idv_m_zones(u_char *p, u_char *end)
{
    ngx_uint_t              i, f, nstores;
    ngx_array_t            *stores;
    ngx_http_idv_store_t  **st, *s;

    static const char  *names[] = {
        "idv_zone_used_ratio", "idv_store_full_total",
        "idv_store_evictions_total", "idv_store_entries",
        "idv_store_unavailable_total"
    };

    static const char  *help[] = {
        "Occupancy of the module's shared memory zones.\n"
        "# TYPE idv_zone_used_ratio gauge",
        "Batches a store refused because its zone had no room (none of "
        "them was applied).\n# TYPE idv_store_full_total counter",
        "Entries written without keep that were evicted to make room.\n"
        "# TYPE idv_store_evictions_total counter",
        "Entries in a store.\n# TYPE idv_store_entries gauge",
        "Batches the zone's remote backend (Redis) could not run, settled "
        "by its on_error policy.\n# TYPE idv_store_unavailable_total counter"
    };

    stores = ngx_http_idv_store_all();
    st = stores ? stores->elts : NULL;
    nstores = stores ? stores->nelts : 0;

    for (f = 0; f < 5; f++) {
        p = ngx_slprintf(p, end, "# HELP %s %s\n", names[f], help[f]);

        for (i = 0; i < nstores; i++) {
            s = st[i];

            if (f == 0) {
                p = ngx_http_idv_m_sample(p, end, names[f], &s->name,
                                          s->kind, " %.4f\n",
                                          s->backend->used(s));
                continue;
            }

            p = ngx_http_idv_m_sample(p, end, names[f], &s->name, s->kind,
                                      " %ui\n",
                                      (f == 1) ? s->backend->full(s)
                                      : (f == 2) ? s->backend->evicted(s)
                                      : (f == 3) ? s->backend->entries(s)
                                      : ngx_http_idv_store_unavailable(s));
        }

        if (f == 0) {
            p = ngx_http_idv_m_legacy_zones(p, end, st, nstores);
        }
    }

    return p;
}


/* the zones of the module that are not stores: their slab pools' use */

static u_char *
ngx_http_idv_m_legacy_zones(u_char *p, u_char *end,
    ngx_http_idv_store_t **st, ngx_uint_t nstores)
{
    ngx_uint_t              i, j, k;
    ngx_shm_zone_t         *zone;
    ngx_list_part_t        *part;
    ngx_http_idv_m_zone_t  *legacy;

    part = &((ngx_cycle_t *) ngx_cycle)->shared_memory.part;

    for ( /* void */ ; part; part = part->next) {
        zone = part->elts;

        for (i = 0; i < part->nelts; i++) {

            for (k = 0; ngx_http_idv_m_legacy[k].module; k++) {
                if (zone[i].tag == ngx_http_idv_m_legacy[k].module) {
                    break;
                }
            }

            for (j = 0; j < nstores && st[j]->shm_zone != &zone[i]; j++) {
                /* void */
            }

            legacy = &ngx_http_idv_m_legacy[k];

            if (legacy->module == NULL || j < nstores) {
                continue;
            }

            p = ngx_http_idv_m_sample(p, end, "idv_zone_used_ratio",
                                      &zone[i].shm.name, legacy->kind,
                                      " %.4f\n",
                                      ngx_http_idv_store_slab_used(&zone[i]));
        }
    }

    return p;
}


/* one sample of a zone: NAME{zone="...",kind="..."} VALUE */

static u_char *
ngx_http_idv_m_sample(u_char *p, u_char *end, const char *name,
    ngx_str_t *zone, const char *kind, const char *fmt, ...)
{
    va_list  args;

    p = ngx_slprintf(p, end, "%s{zone=\"", name);
    p = ngx_http_idv_m_label(p, end, zone->data, zone->len);
    p = ngx_slprintf(p, end, "\",kind=\"%s\"}", kind);

    va_start(args, fmt);
    p = ngx_vslprintf(p, end, fmt, args);
    va_end(args);

    return p;
}


/*
 * label values: backslash, double quote and newline escaped; a control
 * byte or one that is not part of well-formed UTF-8 printed as "?", so
 * that the page is valid UTF-8 whatever a label holds
 */

static u_char *
ngx_http_idv_m_label(u_char *p, u_char *end, u_char *s, size_t len)
{
    u_char  *last;
    size_t   n;

    last = s + len;

    while (s < last && end - p >= 4) {

        switch (*s) {

        case '\\':
        case '"':
            *p++ = '\\';
            *p++ = *s++;
            continue;

        case '\n':
            *p++ = '\\';
            *p++ = 'n';
            s++;
            continue;
        }

        n = ngx_http_idv_m_utf8(s, last);

        if (n == 0 || *s < 0x20 || *s == 0x7f) {
            *p++ = '?';
            s++;
            continue;
        }

        p = ngx_cpymem(p, s, n);
        s += n;
    }

    return p;
}


static ngx_int_t
ngx_http_idv_m_init_zone(ngx_shm_zone_t *shm_zone, void *data)
{
    ngx_http_idv_m_main_conf_t  *omcf = data;

    size_t                       size;
    ngx_http_idv_m_main_conf_t  *mmcf;

    mmcf = shm_zone->data;

    if (omcf && omcf->sh) {
        mmcf->sh = omcf->sh;
        mmcf->shpool = omcf->shpool;
        return NGX_OK;
    }

    mmcf->shpool = (ngx_slab_pool_t *) shm_zone->shm.addr;

    if (shm_zone->shm.exists) {
        mmcf->sh = mmcf->shpool->data;
        return NGX_OK;
    }

    size = offsetof(ngx_http_idv_m_shctx_t, tenants)
           + (mmcf->ntenants + 1) * sizeof(ngx_http_idv_m_tenant_t);

    mmcf->sh = ngx_slab_calloc(mmcf->shpool, size);
    if (mmcf->sh == NULL) {
        ngx_log_error(NGX_LOG_EMERG, shm_zone->shm.log, 0,
                      "idv_metrics_zone \"%V\" is too small: it needs %uz "
                      "bytes", &shm_zone->shm.name, size + 8 * ngx_pagesize);
        return NGX_ERROR;
    }

    mmcf->sh->ntenants = mmcf->ntenants + 1;
    mmcf->shpool->data = mmcf->sh;

    return NGX_OK;
}


static ngx_int_t
ngx_http_idv_m_find_var(ngx_conf_t *cf, char *name)
{
    ngx_str_t                   s;
    ngx_uint_t                  i;
    ngx_hash_key_t             *key;
    ngx_http_core_main_conf_t  *cmcf;

    /* only a variable some module registered: no "unknown variable" */

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    if (cmcf->variables_keys == NULL) {
        return NGX_ERROR;
    }

    s.data = (u_char *) name;
    s.len = ngx_strlen(name);

    key = cmcf->variables_keys->keys.elts;

    for (i = 0; i < cmcf->variables_keys->keys.nelts; i++) {
        if (key[i].key.len == s.len
            && ngx_strncmp(key[i].key.data, s.data, s.len) == 0)
        {
            return ngx_http_get_variable_index(cf, &s);
        }
    }

    return NGX_ERROR;
}


static void *
ngx_http_idv_m_create_main_conf(ngx_conf_t *cf)
{
    ngx_http_idv_m_main_conf_t  *mmcf;

    mmcf = ngx_pcalloc(cf->pool, sizeof(ngx_http_idv_m_main_conf_t));
    if (mmcf == NULL) {
        return NULL;
    }

    mmcf->ntenants = 20;
    mmcf->cache_index = NGX_ERROR;
    mmcf->limit_index = NGX_ERROR;

    return mmcf;
}


static ngx_int_t
ngx_http_idv_m_add_zone(ngx_conf_t *cf, ngx_http_idv_m_main_conf_t *mmcf,
    ssize_t size)
{
    ngx_str_t  name = ngx_string("idv_metrics");

    /* counters are kept across reloads, or the reload is refused */

    if (ngx_http_idv_store_same_size(cf, &name, size, "metrics",
                                     &ngx_http_idv_metrics_module)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    mmcf->shm_zone = ngx_shared_memory_add(cf, &name, size,
                                           &ngx_http_idv_metrics_module);
    if (mmcf->shm_zone == NULL) {
        return NGX_ERROR;
    }

    mmcf->shm_zone->init = ngx_http_idv_m_init_zone;
    mmcf->shm_zone->data = mmcf;

    return NGX_OK;
}


/* idv_metrics_zone SIZE [tenants=N]; */

static char *
ngx_http_idv_m_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_idv_m_main_conf_t *mmcf = conf;

    ssize_t     size;
    ngx_int_t   n;
    ngx_str_t  *value;

    if (mmcf->shm_zone) {
        return "is duplicate (or follows \"idv_metrics\")";
    }

    value = cf->args->elts;

    size = ngx_parse_size(&value[1]);

    if (size == NGX_ERROR || size < (ssize_t) (8 * ngx_pagesize)) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "invalid idv_metrics_zone size \"%V\", the "
                           "minimum is %uz", &value[1], 8 * ngx_pagesize);
        return NGX_CONF_ERROR;
    }

    if (cf->args->nelts == 3) {
        if (ngx_strncmp(value[2].data, "tenants=", 8) != 0) {
            return "takes \"SIZE [tenants=N]\"";
        }

        n = ngx_atoi(value[2].data + 8, value[2].len - 8);

        if (n == NGX_ERROR || n > 10000) {
            return "has an invalid tenants= (0 to 10000)";
        }

        mmcf->ntenants = n;
    }

    if (ngx_http_idv_m_add_zone(cf, mmcf, size) != NGX_OK) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static char *
ngx_http_idv_m_metrics(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_idv_m_main_conf_t *mmcf = conf;

    ngx_http_core_loc_conf_t  *clcf;

    /* without idv_metrics_zone before it: a default one */

    if (mmcf->shm_zone == NULL
        && ngx_http_idv_m_add_zone(cf, mmcf, 1024 * 1024) != NGX_OK)
    {
        return NGX_CONF_ERROR;
    }

    clcf = ngx_http_conf_get_module_loc_conf(cf, ngx_http_core_module);
    clcf->handler = ngx_http_idv_m_handler;

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_idv_m_init(ngx_conf_t *cf)
{
    ngx_http_handler_pt         *h;
    ngx_http_core_main_conf_t   *cmcf;
    ngx_http_idv_m_main_conf_t  *mmcf;

    mmcf = ngx_http_conf_get_module_main_conf(cf,
                                              ngx_http_idv_metrics_module);

    if (mmcf->shm_zone == NULL) {
        return NGX_OK;
    }

    mmcf->cache_index = ngx_http_idv_m_find_var(cf, "idv_cache_status");
    mmcf->limit_index = ngx_http_idv_m_find_var(cf, "idv_limit_status");

    cmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_core_module);

    h = ngx_array_push(&cmcf->phases[NGX_HTTP_LOG_PHASE].handlers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    *h = ngx_http_idv_m_log;

    return NGX_OK;
}

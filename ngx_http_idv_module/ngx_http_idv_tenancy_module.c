
/*
 * ngx_http_idv_tenancy_module: which tenant owns which transaction.
 *
 * Every successful call that creates a transaction records its
 * TransactionId with the tenant and the MerchantBizId that started it,
 * and the MerchantBizId with its tenant; every request that names a
 * TransactionId or reads by MerchantBizId is checked against those
 * records before anything is charged or sent.  A tenant never reads,
 * deletes or receives the callback of another tenant's transaction.
 *
 * Final CheckResult answers may be kept next to those records (for the
 * cache's idv_cache_results and for callbacks without a pass): given
 * again only to the tenant and MerchantBizId that got them, and evicted
 * first when the zone is full.
 *
 * The records live in the keyed store (idv_tenancy_zone), never evicted
 * before their ttl: losing one would let another tenant in.  A zone that
 * cannot be read refuses the request (503); a record that cannot be
 * written is logged as an error, see ngx_http_idv_tenancy_record().
 */


#include "ngx_http_idv_module.h"
#include "ngx_http_idv_store.h"
#include "ngx_http_idv_tenancy.h"

#include <cjson/cJSON.h>


/* a MerchantBizId that two tenants have used: no one reads by it alone */
#define NGX_HTTP_IDV_TENANCY_SHARED   "\x00shared"

#define NGX_HTTP_IDV_TENANCY_TTL      ((ngx_msec_t) 30 * 86400 * 1000)
#define NGX_HTTP_IDV_TENANCY_MAX      NGX_HTTP_IDV_NAME_MAX


typedef struct {
    ngx_http_idv_store_t          *store;
    ngx_msec_t                     ttl;
} ngx_http_idv_tenancy_main_conf_t;


typedef struct {
    ngx_flag_t                     strict;
} ngx_http_idv_tenancy_loc_conf_t;


typedef struct {
    ngx_http_idv_store_batch_t     batch;
    ngx_http_idv_store_op_t        ops[2];
    ngx_uint_t                     step;

    /* a kept result: looked up with the check (one round trip) */
    ngx_http_idv_store_batch_t     kept;
    ngx_http_idv_store_op_t        kept_op;
    unsigned                       looked:1;
} ngx_http_idv_tenancy_ctx_t;


/* steps of a request */
#define NGX_HTTP_IDV_TENANCY_CHECK    1
#define NGX_HTTP_IDV_TENANCY_CHECKED  2
#define NGX_HTTP_IDV_TENANCY_RECORD   3
#define NGX_HTTP_IDV_TENANCY_SHARE    4
#define NGX_HTTP_IDV_TENANCY_DONE     5
#define NGX_HTTP_IDV_TENANCY_KEEP     6

/* kept CheckResult answers of at most this size */
#define NGX_HTTP_IDV_TENANCY_RESULT_MAX  16384


static ngx_int_t ngx_http_idv_tenancy_check(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx);
static ngx_int_t ngx_http_idv_tenancy_verdict(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_tenancy_ctx_t *tctx);
static ngx_int_t ngx_http_idv_tenancy_kept(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx);
static void ngx_http_idv_tenancy_json_cleanup(void *data);
static ngx_uint_t ngx_http_idv_tenancy_plain(ngx_http_idv_ctx_t *ctx);
static ngx_int_t ngx_http_idv_tenancy_record(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx);
static ngx_int_t ngx_http_idv_tenancy_keep(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_http_idv_tenancy_ctx_t *tctx);
static ngx_http_idv_tenancy_ctx_t *ngx_http_idv_tenancy_ctx(
    ngx_http_request_t *r);
static ngx_int_t ngx_http_idv_tenancy_string(u_char **p, u_char *last,
    ngx_str_t *s);
static ngx_int_t ngx_http_idv_tenancy_key(ngx_http_request_t *r,
    ngx_str_t *key, u_char kind, ngx_str_t *id);
static ngx_int_t ngx_http_idv_tenancy_value(ngx_http_request_t *r,
    ngx_str_t *value, ngx_str_t *tenant, ngx_str_t *biz,
    ngx_uint_t with_biz);
static ngx_int_t ngx_http_idv_tenancy_forbidden(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, const char *why);

static void *ngx_http_idv_tenancy_create_main_conf(ngx_conf_t *cf);
static void *ngx_http_idv_tenancy_create_loc_conf(ngx_conf_t *cf);
static char *ngx_http_idv_tenancy_merge_loc_conf(ngx_conf_t *cf,
    void *parent, void *child);
static char *ngx_http_idv_tenancy_zone(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);
static ngx_int_t ngx_http_idv_tenancy_init(ngx_conf_t *cf);


static ngx_command_t  ngx_http_idv_tenancy_commands[] = {

    { ngx_string("idv_tenancy_zone"),
      NGX_HTTP_MAIN_CONF|NGX_CONF_1MORE,
      ngx_http_idv_tenancy_zone,
      NGX_HTTP_MAIN_CONF_OFFSET,
      0,
      NULL },

    { ngx_string("idv_tenancy_strict"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idv_tenancy_loc_conf_t, strict),
      NULL },

    /* its name when ownership was the cache's */
    { ngx_string("idv_cache_strict"),
      NGX_HTTP_MAIN_CONF|NGX_HTTP_SRV_CONF|NGX_HTTP_LOC_CONF|NGX_CONF_FLAG,
      ngx_conf_set_flag_slot,
      NGX_HTTP_LOC_CONF_OFFSET,
      offsetof(ngx_http_idv_tenancy_loc_conf_t, strict),
      NULL },

      ngx_null_command
};


static ngx_http_module_t  ngx_http_idv_tenancy_module_ctx = {
    NULL,                                  /* preconfiguration */
    ngx_http_idv_tenancy_init,             /* postconfiguration */

    ngx_http_idv_tenancy_create_main_conf, /* create main configuration */
    NULL,                                  /* init main configuration */

    NULL,                                  /* create server configuration */
    NULL,                                  /* merge server configuration */

    ngx_http_idv_tenancy_create_loc_conf,  /* create location configuration */
    ngx_http_idv_tenancy_merge_loc_conf    /* merge location configuration */
};


ngx_module_t  ngx_http_idv_tenancy_module = {
    NGX_MODULE_V1,
    &ngx_http_idv_tenancy_module_ctx,      /* module context */
    ngx_http_idv_tenancy_commands,         /* module directives */
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


/*
 * CHECK: a request that names a transaction, or reads by MerchantBizId,
 * is the tenant's own or is refused.  Unknown ones pass unless the
 * location is strict.
 */

static ngx_int_t
ngx_http_idv_tenancy_check(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx)
{
    ngx_uint_t                         flags;
    ngx_http_idv_tenancy_ctx_t        *tctx;
    ngx_http_idv_store_op_t           *op;
    ngx_http_idv_tenancy_loc_conf_t   *tlcf;
    ngx_http_idv_tenancy_main_conf_t  *tmcf;

    tctx = ngx_http_get_module_ctx(r, ngx_http_idv_tenancy_module);

    if (tctx) {
        if (tctx->batch.pending) {
            return NGX_AGAIN;
        }

        if (tctx->step == NGX_HTTP_IDV_TENANCY_CHECK) {
            tctx->step = NGX_HTTP_IDV_TENANCY_CHECKED;
            return ngx_http_idv_tenancy_verdict(r, ctx, tctx);
        }

        return NGX_DECLINED;
    }

    tmcf = ngx_http_get_module_main_conf(r, ngx_http_idv_tenancy_module);
    flags = ctx->conf->op->flags;

    if (tmcf->store == NULL || ctx->tenant.len == 0
        || !(flags & (NGX_HTTP_IDV_OP_READS_TX|NGX_HTTP_IDV_OP_READS_BIZ
                      |NGX_HTTP_IDV_OP_CREATES_TX)))
    {
        return NGX_DECLINED;
    }

    tctx = ngx_http_idv_tenancy_ctx(r);
    if (tctx == NULL) {
        return NGX_ERROR;
    }

    if (!(flags & (NGX_HTTP_IDV_OP_READS_TX|NGX_HTTP_IDV_OP_READS_BIZ))
        || (ctx->transaction_id.len == 0 && ctx->merchant_biz_id.len == 0))
    {
        /* creates a transaction: recorded once it succeeded */
        tctx->step = NGX_HTTP_IDV_TENANCY_CHECKED;
        return NGX_DECLINED;
    }

    /*
     * CHECK: the record must begin with what this request's would be
     * (the tenant, and the MerchantBizId it gives with a TransactionId),
     * so that a foreign owner stops a group of state calls at once; the
     * verdict below says why
     */

    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_idv_tenancy_module);

    op = &tctx->ops[0];
    op->store = tmcf->store;
    op->op = NGX_HTTP_IDV_STORE_CHECK;
    op->present = tlcf->strict ? 1 : 0;

    if (ctx->transaction_id.len) {
        if (ngx_http_idv_tenancy_key(r, &op->key, 't', &ctx->transaction_id)
            != NGX_OK
            || ngx_http_idv_tenancy_value(r, &op->expect, &ctx->tenant,
                                          &ctx->merchant_biz_id,
                                          ctx->merchant_biz_id.len != 0)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

    } else if (ngx_http_idv_tenancy_key(r, &op->key, 'b',
                                        &ctx->merchant_biz_id)
               != NGX_OK
               || ngx_http_idv_tenancy_value(r, &op->expect, &ctx->tenant,
                                             &ctx->merchant_biz_id, 0)
                  != NGX_OK)
    {
        return NGX_ERROR;
    }

    tctx->batch.ops = tctx->ops;
    tctx->batch.nops = 1;
    tctx->step = NGX_HTTP_IDV_TENANCY_CHECK;

    if (ngx_http_idv_state_call(r, &tctx->batch) == NGX_AGAIN) {
        return NGX_AGAIN;
    }

    tctx->step = NGX_HTTP_IDV_TENANCY_CHECKED;

    return ngx_http_idv_tenancy_verdict(r, ctx, tctx);
}


/* the record read, compared with the request */

static ngx_int_t
ngx_http_idv_tenancy_verdict(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_tenancy_ctx_t *tctx)
{
    u_char                           *p, *last;
    size_t                            tlen, blen;
    ngx_str_t                         *v;
    ngx_http_idv_store_op_t           *op;
    ngx_http_idv_tenancy_loc_conf_t   *tlcf;
    ngx_http_idv_tenancy_main_conf_t  *tmcf;

    if (tctx->batch.rc != NGX_OK) {
        tmcf = ngx_http_get_module_main_conf(r, ngx_http_idv_tenancy_module);
        return ngx_http_idv_state_error(r, ctx, tmcf->store, tctx->batch.rc);
    }

    op = &tctx->ops[0];
    tlcf = ngx_http_get_module_loc_conf(r, ngx_http_idv_tenancy_module);

    if (op->result.len == 0) {
        /* no record */

        if (!tlcf->strict) {
            return NGX_DECLINED;
        }

        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "idv: %s \"%V\" is not known to idv_tenancy_zone "
                      "(idv_tenancy_strict), refused for tenant \"%V\"",
                      ctx->transaction_id.len ? "TransactionId"
                                              : "MerchantBizId",
                      ctx->transaction_id.len ? &ctx->transaction_id
                                              : &ctx->merchant_biz_id,
                      &ctx->tenant);

        return ngx_http_idv_tenancy_forbidden(r, ctx, NULL);
    }

    /* the value: tenant length, tenant, MerchantBizId length, id */

    v = &op->result;
    p = v->data;
    last = v->data + v->len;

    if (v->len == sizeof(NGX_HTTP_IDV_TENANCY_SHARED) - 1
        && ngx_memcmp(p, NGX_HTTP_IDV_TENANCY_SHARED, v->len) == 0)
    {
        return ngx_http_idv_tenancy_forbidden(r, ctx,
                                              "MerchantBizId used by several "
                                              "tenants");
    }

    if (p == last || (size_t) (last - p) < 1 + (size_t) p[0]) {
        goto corrupt;
    }

    tlen = *p++;

    if (tlen != ctx->tenant.len
        || !ngx_http_idv_memeq(p, ctx->tenant.data, tlen))
    {
        return ngx_http_idv_tenancy_forbidden(r, ctx, "another tenant's");
    }

    p += tlen;

    if (ctx->transaction_id.len == 0) {
        /* a MerchantBizId record holds the tenant alone */
        return NGX_DECLINED;
    }

    if (p == last || (size_t) (last - p) < 1 + (size_t) p[0]) {
        goto corrupt;
    }

    blen = *p++;

    /* the service checks the pair too; where the gateway knows it, first */

    if (ctx->merchant_biz_id.len
        && (blen != ctx->merchant_biz_id.len
            || !ngx_http_idv_memeq(p, ctx->merchant_biz_id.data, blen)))
    {
        return ngx_http_idv_tenancy_forbidden(r, ctx,
                                              "MerchantBizId of another "
                                              "transaction");
    }

    return NGX_DECLINED;

corrupt:

    ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                  "idv: a malformed record in idv_tenancy_zone");

    return ngx_http_idv_tenancy_forbidden(r, ctx, NULL);
}


/*
 * ANSWER: a transaction the service just created is recorded for the
 * tenant, and so is its MerchantBizId (as shared once two tenants used
 * it).
 */

static ngx_int_t
ngx_http_idv_tenancy_record(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx)
{
    ngx_str_t                          none = ngx_null_string;
    ngx_http_idv_store_op_t           *op;
    ngx_http_idv_tenancy_ctx_t        *tctx;
    ngx_http_idv_tenancy_main_conf_t  *tmcf;

    tmcf = ngx_http_get_module_main_conf(r, ngx_http_idv_tenancy_module);

    if (tmcf->store == NULL) {
        return NGX_DECLINED;
    }

    tctx = ngx_http_get_module_ctx(r, ngx_http_idv_tenancy_module);

    if (tctx == NULL) {
        if (ctx->keep_result == 0) {
            return NGX_DECLINED;
        }

        tctx = ngx_http_idv_tenancy_ctx(r);
        if (tctx == NULL) {
            return NGX_ERROR;
        }

        tctx->step = NGX_HTTP_IDV_TENANCY_CHECKED;
    }

    if (tctx->batch.pending) {
        return NGX_AGAIN;
    }

    switch (tctx->step) {

    case NGX_HTTP_IDV_TENANCY_CHECKED:

        if (!(ctx->conf->op->flags & NGX_HTTP_IDV_OP_CREATES_TX)
            || !ctx->answer.upstream || ctx->answer.status != NGX_HTTP_OK
            || ctx->transaction_id.len == 0)
        {
            return ngx_http_idv_tenancy_keep(r, ctx, tctx);
        }

        ngx_memzero(tctx->ops, sizeof(tctx->ops));

        op = &tctx->ops[0];
        op->store = tmcf->store;
        op->op = NGX_HTTP_IDV_STORE_SET;
        op->ttl = tmcf->ttl;
        op->keep = 1;

        if (ngx_http_idv_tenancy_key(r, &op->key, 't', &ctx->transaction_id)
            != NGX_OK
            || ngx_http_idv_tenancy_value(r, &op->value, &ctx->tenant,
                                          &ctx->merchant_biz_id, 1)
               != NGX_OK)
        {
            return NGX_ERROR;
        }

        tctx->batch.nops = 1;

        if (ctx->merchant_biz_id.len) {
            op = &tctx->ops[1];
            op->store = tmcf->store;
            op->op = NGX_HTTP_IDV_STORE_ADD;
            op->ttl = tmcf->ttl;
            op->keep = 1;

            if (ngx_http_idv_tenancy_key(r, &op->key, 'b',
                                         &ctx->merchant_biz_id)
                != NGX_OK
                || ngx_http_idv_tenancy_value(r, &op->value, &ctx->tenant,
                                              &none, 0)
                   != NGX_OK)
            {
                return NGX_ERROR;
            }

            tctx->batch.nops = 2;
        }

        tctx->batch.ops = tctx->ops;
        tctx->step = NGX_HTTP_IDV_TENANCY_RECORD;

        if (ngx_http_idv_state_call(r, &tctx->batch) == NGX_AGAIN) {
            return NGX_AGAIN;
        }

        /* fall through */

    case NGX_HTTP_IDV_TENANCY_RECORD:

        if (tctx->batch.rc != NGX_OK) {
            /*
             * The service has created (and billed) the transaction: its
             * answer still goes to the backend, which would otherwise pay
             * again for a retry.  Without a record, a strict location
             * refuses the transaction to everyone, its owner included;
             * elsewhere only the service's own MerchantBizId check
             * guards it.  Loud, so that the zone is made larger.
             */

            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "idv: TransactionId \"%V\" of tenant \"%V\" not "
                          "recorded: idv_tenancy_zone \"%V\" is %s",
                          &ctx->transaction_id, &ctx->tenant,
                          &tmcf->store->name,
                          tctx->batch.rc == NGX_HTTP_IDV_STORE_FULL
                          ? "full" : "unavailable");

            tctx->step = NGX_HTTP_IDV_TENANCY_DONE;

            return NGX_DECLINED;
        }

        op = &tctx->ops[1];

        if (tctx->batch.nops < 2 || op->rc == NGX_OK) {
            tctx->step = NGX_HTTP_IDV_TENANCY_DONE;
            return NGX_DECLINED;
        }

        op->op = NGX_HTTP_IDV_STORE_SET;

        if (!(op->result.len == op->value.len
              && ngx_http_idv_memeq(op->result.data, op->value.data,
                                    op->value.len)))
        {
            /* another tenant's MerchantBizId too: nobody reads by it alone */
            ngx_str_set(&op->value, NGX_HTTP_IDV_TENANCY_SHARED);
        }

        /* (the tenant's own again: its lifetime starts anew) */

        tctx->batch.ops = op;
        tctx->batch.nops = 1;
        tctx->step = NGX_HTTP_IDV_TENANCY_SHARE;

        if (ngx_http_idv_state_call(r, &tctx->batch) == NGX_AGAIN) {
            return NGX_AGAIN;
        }

        /* fall through */

    case NGX_HTTP_IDV_TENANCY_SHARE:

        tctx->step = NGX_HTTP_IDV_TENANCY_DONE;

        if (tctx->batch.rc != NGX_OK) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "idv: MerchantBizId \"%V\" not marked as shared "
                          "by several tenants: idv_tenancy_zone \"%V\" is "
                          "full or unavailable",
                          &ctx->merchant_biz_id, &tmcf->store->name);
        }

        return NGX_DECLINED;

    case NGX_HTTP_IDV_TENANCY_KEEP:

        tctx->step = NGX_HTTP_IDV_TENANCY_DONE;

        if (tctx->batch.rc != NGX_OK) {
            /* only a cost: CheckResult will ask the service */
            ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                          "idv: the result of TransactionId \"%V\" not "
                          "kept: idv_tenancy_zone \"%V\" is full or "
                          "unavailable", &ctx->transaction_id,
                          &tmcf->store->name);
        }

        return NGX_DECLINED;

    default:
        return NGX_DECLINED;
    }
}


/*
 * STATE: a CheckResult that may be answered from a kept result (the
 * cache's idv_cache_results, a callback's without a pass) gets it, if
 * this tenant and MerchantBizId got it first.  The value: Passed, the
 * tenant and the MerchantBizId each with its size, the envelope.
 */

static ngx_int_t
ngx_http_idv_tenancy_kept(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx)
{
    u_char                            *p, *last;
    cJSON                             *json;
    ngx_str_t                          age, tenant, biz;
    ngx_uint_t                         passed;
    ngx_pool_cleanup_t                *cln;
    ngx_http_idv_store_op_t           *op;
    ngx_http_idv_tenancy_ctx_t        *tctx;
    ngx_http_idv_tenancy_main_conf_t  *tmcf;

    tmcf = ngx_http_get_module_main_conf(r, ngx_http_idv_tenancy_module);

    if (!ctx->kept_result || tmcf->store == NULL
        || ctx->transaction_id.len == 0 || !ngx_http_idv_tenancy_plain(ctx))
    {
        return NGX_DECLINED;
    }

    tctx = ngx_http_idv_tenancy_ctx(r);
    if (tctx == NULL) {
        return NGX_ERROR;
    }

    if (tctx->kept.pending) {
        return NGX_AGAIN;
    }

    op = &tctx->kept_op;

    if (!tctx->looked) {
        tctx->looked = 1;

        ngx_memzero(op, sizeof(ngx_http_idv_store_op_t));

        op->store = tmcf->store;
        op->op = NGX_HTTP_IDV_STORE_GET;

        if (ngx_http_idv_tenancy_key(r, &op->key, 'r', &ctx->transaction_id)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        tctx->kept.ops = op;
        tctx->kept.nops = 1;

        if (ngx_http_idv_state_call(r, &tctx->kept) == NGX_AGAIN) {
            return NGX_AGAIN;
        }
    }

    if (tctx->kept.rc != NGX_OK || op->rc != NGX_OK) {
        /* nothing kept (an unavailable store only costs a call) */
        return NGX_DECLINED;
    }

    p = op->result.data;
    last = p + op->result.len;

    if (p == last) {
        return NGX_DECLINED;
    }

    passed = *p++;

    if (ngx_http_idv_tenancy_string(&p, last, &tenant) != NGX_OK
        || ngx_http_idv_tenancy_string(&p, last, &biz) != NGX_OK
        || p == last)
    {
        ngx_log_error(NGX_LOG_ALERT, r->connection->log, 0,
                      "idv: a malformed result in idv_tenancy_zone \"%V\"",
                      &tmcf->store->name);
        return NGX_DECLINED;
    }

    if (tenant.len != ctx->tenant.len
        || !ngx_http_idv_memeq(tenant.data, ctx->tenant.data, tenant.len)
        || biz.len != ctx->merchant_biz_id.len
        || !ngx_http_idv_memeq(biz.data, ctx->merchant_biz_id.data,
                               biz.len))
    {
        /* another's: the service decides */
        return NGX_DECLINED;
    }

    /* Age: how old the answer given again is, as HTTP caches say it */

    age.data = ngx_pnalloc(r->pool, NGX_TIME_T_LEN);
    if (age.data == NULL) {
        return NGX_ERROR;
    }

    age.len = ngx_sprintf(age.data, "%M", op->age / 1000) - age.data;

    if (ngx_http_idv_set_header(r, "Age", &age, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    ctx->passed = passed;
    ctx->cached = 1;
    ngx_str_set(&ctx->code, "Success");

    json = NULL;

    if (ctx->conf->expand_json) {
        /* the renderer expands the Ext* members of a parsed answer */

        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            return NGX_ERROR;
        }

        json = cJSON_ParseWithLength((char *) p, last - p);
        if (json == NULL) {
            return NGX_ERROR;
        }

        cln->handler = ngx_http_idv_tenancy_json_cleanup;
        cln->data = json;
    }

    return ngx_http_idv_reply(r, ctx, NGX_HTTP_OK, p, last, json);
}


static void
ngx_http_idv_tenancy_json_cleanup(void *data)
{
    cJSON_Delete(data);
}


/*
 * Only the plain CheckResult (no images, no extras) is kept and given
 * again: its answer is small and the same for every caller of the same
 * tenant.
 */

static ngx_uint_t
ngx_http_idv_tenancy_plain(ngx_http_idv_ctx_t *ctx)
{
    size_t                 i;
    ngx_http_idv_param_t  *p;

    if (!(ctx->conf->op->flags & NGX_HTTP_IDV_OP_RESULT)) {
        return 0;
    }

    for (i = 0; i < ctx->req.nparams; i++) {
        p = &ctx->req.params[i];

        if (p->key.len == sizeof("MerchantBizId") - 1
            && ngx_strncmp(p->key.data, "MerchantBizId", p->key.len) == 0)
        {
            continue;
        }

        if (p->key.len == sizeof("TransactionId") - 1
            && ngx_strncmp(p->key.data, "TransactionId", p->key.len) == 0)
        {
            continue;
        }

        if (p->key.len == sizeof("IsReturnImage") - 1
            && ngx_strncmp(p->key.data, "IsReturnImage", p->key.len) == 0
            && p->value.len == 1 && p->value.data[0] == 'N')
        {
            continue;
        }

        return 0;
    }

    return 1;
}


/* ANSWER: a final plain CheckResult answer, kept when asked to */

static ngx_int_t
ngx_http_idv_tenancy_keep(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_tenancy_ctx_t *tctx)
{
    u_char                            *p;
    size_t                             len;
    ngx_str_t                         *v;
    ngx_http_idv_store_op_t           *op;
    ngx_http_idv_tenancy_main_conf_t  *tmcf;

    len = ctx->answer.end - ctx->answer.start;

    if (ctx->keep_result == 0 || !ctx->answer.upstream
        || ctx->answer.status != NGX_HTTP_OK
        || ctx->passed == NGX_HTTP_IDV_PASSED_UNKNOWN
        || ctx->transaction_id.len == 0 || !ngx_http_idv_tenancy_plain(ctx)
        || len > NGX_HTTP_IDV_TENANCY_RESULT_MAX
        || ctx->tenant.len > NGX_HTTP_IDV_TENANCY_MAX
        || ctx->merchant_biz_id.len > NGX_HTTP_IDV_TENANCY_MAX)
    {
        tctx->step = NGX_HTTP_IDV_TENANCY_DONE;
        return NGX_DECLINED;
    }

    tmcf = ngx_http_get_module_main_conf(r, ngx_http_idv_tenancy_module);

    ngx_memzero(tctx->ops, sizeof(tctx->ops));

    op = &tctx->ops[0];
    op->store = tmcf->store;
    op->op = NGX_HTTP_IDV_STORE_SET;
    op->ttl = ctx->keep_result;

    if (ngx_http_idv_tenancy_key(r, &op->key, 'r', &ctx->transaction_id)
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    v = &op->value;
    v->len = 1 + 1 + ctx->tenant.len + 1 + ctx->merchant_biz_id.len + len;
    v->data = ngx_pnalloc(r->pool, v->len);
    if (v->data == NULL) {
        return NGX_ERROR;
    }

    p = v->data;
    *p++ = (u_char) ctx->passed;
    *p++ = (u_char) ctx->tenant.len;
    p = ngx_http_idv_cpymem(p, ctx->tenant.data, ctx->tenant.len);
    *p++ = (u_char) ctx->merchant_biz_id.len;
    p = ngx_http_idv_cpymem(p, ctx->merchant_biz_id.data,
                            ctx->merchant_biz_id.len);
    ngx_memcpy(p, ctx->answer.start, len);

    tctx->batch.ops = op;
    tctx->batch.nops = 1;
    tctx->step = NGX_HTTP_IDV_TENANCY_KEEP;

    if (ngx_http_idv_state_call(r, &tctx->batch) == NGX_AGAIN) {
        return NGX_AGAIN;
    }

    return ngx_http_idv_tenancy_record(r, ctx);
}


static ngx_http_idv_tenancy_ctx_t *
ngx_http_idv_tenancy_ctx(ngx_http_request_t *r)
{
    ngx_http_idv_tenancy_ctx_t  *tctx;

    tctx = ngx_http_get_module_ctx(r, ngx_http_idv_tenancy_module);

    if (tctx == NULL) {
        tctx = ngx_pcalloc(r->pool, sizeof(ngx_http_idv_tenancy_ctx_t));
        if (tctx == NULL) {
            return NULL;
        }

        ngx_http_set_ctx(r, tctx, ngx_http_idv_tenancy_module);
    }

    return tctx;
}


/* a string with its size in one byte, from a stored value */

static ngx_int_t
ngx_http_idv_tenancy_string(u_char **p, u_char *last, ngx_str_t *s)
{
    if (*p >= last || (size_t) (last - *p) < 1 + (size_t) **p) {
        return NGX_ERROR;
    }

    s->len = **p;
    s->data = *p + 1;

    *p += 1 + s->len;

    return NGX_OK;
}


/* a kind byte, then the id: 't' TransactionId, 'b' MerchantBizId */

static ngx_int_t
ngx_http_idv_tenancy_key(ngx_http_request_t *r, ngx_str_t *key, u_char kind,
    ngx_str_t *id)
{
    key->len = 1 + id->len;
    key->data = ngx_pnalloc(r->pool, key->len);
    if (key->data == NULL) {
        return NGX_ERROR;
    }

    key->data[0] = kind;
    (void) ngx_http_idv_cpymem(key->data + 1, id->data, id->len);

    return NGX_OK;
}


static ngx_int_t
ngx_http_idv_tenancy_value(ngx_http_request_t *r, ngx_str_t *value,
    ngx_str_t *tenant, ngx_str_t *biz, ngx_uint_t with_biz)
{
    u_char  *p;

    value->len = 1 + tenant->len + (with_biz ? 1 + biz->len : 0);
    value->data = ngx_pnalloc(r->pool, value->len);
    if (value->data == NULL) {
        return NGX_ERROR;
    }

    p = value->data;
    *p++ = (u_char) tenant->len;
    p = ngx_http_idv_cpymem(p, tenant->data, tenant->len);

    if (with_biz) {
        /* a transaction's: its MerchantBizId, if it has one (may be 0) */
        *p++ = (u_char) biz->len;
        (void) ngx_http_idv_cpymem(p, biz->data, biz->len);
    }

    return NGX_OK;
}


/* one answer for another tenant's and for unknown ones: no oracle */

static ngx_int_t
ngx_http_idv_tenancy_forbidden(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    const char *why)
{
    if (why) {
        ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                      "idv: %s of tenant \"%V\" refused: %s",
                      ctx->transaction_id.len ? "TransactionId"
                                              : "MerchantBizId",
                      &ctx->tenant, why);
    }

    return ngx_http_idv_error(r, ctx, NGX_HTTP_FORBIDDEN, "Forbidden.Tenant",
                              ctx->transaction_id.len
                              ? "The TransactionId does not belong to this "
                                "tenant"
                              : "The MerchantBizId does not belong to this "
                                "tenant");
}


ngx_uint_t
ngx_http_idv_tenancy_configured(ngx_conf_t *cf)
{
    ngx_http_idv_tenancy_main_conf_t  *tmcf;

    tmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_idv_tenancy_module);

    return tmcf->store != NULL;
}


static void *
ngx_http_idv_tenancy_create_main_conf(ngx_conf_t *cf)
{
    return ngx_pcalloc(cf->pool, sizeof(ngx_http_idv_tenancy_main_conf_t));
}


static void *
ngx_http_idv_tenancy_create_loc_conf(ngx_conf_t *cf)
{
    ngx_http_idv_tenancy_loc_conf_t  *conf;

    conf = ngx_pcalloc(cf->pool, sizeof(ngx_http_idv_tenancy_loc_conf_t));
    if (conf == NULL) {
        return NULL;
    }

    conf->strict = NGX_CONF_UNSET;

    return conf;
}


static char *
ngx_http_idv_tenancy_merge_loc_conf(ngx_conf_t *cf, void *parent,
    void *child)
{
    ngx_http_idv_tenancy_loc_conf_t *prev = parent;
    ngx_http_idv_tenancy_loc_conf_t *conf = child;

    ngx_http_idv_tenancy_main_conf_t  *tmcf;

    ngx_conf_merge_value(conf->strict, prev->strict, 0);

    tmcf = ngx_http_conf_get_module_main_conf(cf, ngx_http_idv_tenancy_module);

    if (conf->strict && tmcf->store == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "%V: \"idv_tenancy_strict\" needs "
                           "\"idv_tenancy_zone zone=NAME:SIZE\" in the http "
                           "block (the owners of transactions)",
                           ngx_http_idv_conf_where(cf));
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


/* idv_tenancy_zone zone=NAME:SIZE [ttl=TIME]; */

static char *
ngx_http_idv_tenancy_zone(ngx_conf_t *cf, ngx_command_t *cmd, void *conf)
{
    ngx_http_idv_tenancy_main_conf_t *tmcf = conf;

    if (tmcf->store) {
        return "is duplicate";
    }

    tmcf->ttl = NGX_HTTP_IDV_TENANCY_TTL;

    tmcf->store = ngx_http_idv_store_zone(cf, "tenancy",
                                          &ngx_http_idv_tenancy_module,
                                          &tmcf->ttl);
    if (tmcf->store == NULL) {
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_idv_tenancy_init(ngx_conf_t *cf)
{
    if (ngx_http_idv_add_handler(cf, NGX_HTTP_IDV_PHASE_CHECK,
                                 ngx_http_idv_tenancy_check)
        != NGX_OK
        || ngx_http_idv_add_handler(cf, NGX_HTTP_IDV_PHASE_STATE,
                                    ngx_http_idv_tenancy_kept)
           != NGX_OK)
    {
        return NGX_ERROR;
    }

    return ngx_http_idv_add_handler(cf, NGX_HTTP_IDV_PHASE_ANSWER,
                                    ngx_http_idv_tenancy_record);
}


/*
 * ngx_http_idv_module: the content handler and the request pipeline.
 *
 * A request reads its body, maps it onto the operation's row, then walks
 * the phases of the pipeline (see ngx_http_idv_module.h): the checks that
 * modules registered, the signed upstream call as a POST subrequest to
 * the idv_pass location, the answer handlers, and the answer itself.
 */


#include "ngx_http_idv_module.h"

#include "ngx_http_idv_json.h"


#define NGX_HTTP_IDV_MAX_HANDLERS  8


static void ngx_http_idv_body_handler(ngx_http_request_t *r);
static ngx_int_t ngx_http_idv_process(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx);
static void ngx_http_idv_req_cleanup(void *data);
static ngx_int_t ngx_http_idv_upstream_step(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx);
static void ngx_http_idv_state_done(ngx_http_idv_store_batch_t *b);
static void ngx_http_idv_state_cancel(void *data);
static ngx_int_t ngx_http_idv_state_cleanup(ngx_http_request_t *r,
    ngx_http_idv_store_batch_t *b);
static ngx_uint_t ngx_http_idv_window(ngx_uint_t phase);
static void ngx_http_idv_gather_start(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx);
static ngx_int_t ngx_http_idv_gather_flush(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx);
static void ngx_http_idv_gather_done(ngx_http_idv_store_batch_t *b);
static void ngx_http_idv_gather_end(ngx_http_idv_ctx_t *ctx,
    ngx_uint_t sent);
static ngx_int_t ngx_http_idv_gather_skipped(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx);
static ngx_int_t ngx_http_idv_failure(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_int_t rc);
static ngx_int_t ngx_http_idv_upstream_answer(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx);
static ngx_int_t ngx_http_idv_upstream_failed(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, const char *message);
static ngx_int_t ngx_http_idv_retry(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx);
static void ngx_http_idv_retry_handler(ngx_event_t *ev);
static void ngx_http_idv_retry_cleanup(void *data);
static ngx_uint_t ngx_http_idv_code_status(ngx_str_t *code,
    ngx_uint_t upstream_status);
static ngx_uint_t ngx_http_idv_config_error(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx);
static ngx_int_t ngx_http_idv_copy_string(ngx_pool_t *pool,
    ngx_http_idv_str_t *raw, ngx_str_t *dst);


/*
 * The handlers of each phase, in the order they registered.  Rebuilt by
 * every configuration (ngx_http_idv_handlers_reset() in the core's
 * preconfiguration); the functions are the same in every configuration
 * of one binary, so a reload that fails leaves nothing wrong behind.
 */

static ngx_http_idv_handler_pt
    ngx_http_idv_handlers[NGX_HTTP_IDV_PHASE_DONE][NGX_HTTP_IDV_MAX_HANDLERS];
static ngx_uint_t  ngx_http_idv_nhandlers[NGX_HTTP_IDV_PHASE_DONE];


/*
 * One status per API code, whether the service sent the code with an
 * HTTP status or inside a 200: the status the product's documents give
 * it (shared/seeds, API.md section 8), except that their 401 (a photo or
 * OCR failure, with no authentication challenge) is the 400 the gateway's
 * own checks answer.  Codes not listed: see ngx_http_idv_code_status().
 * docs/backend-api.md shows the same table.
 */

typedef struct {
    ngx_str_t   code;
    ngx_uint_t  status;
} ngx_http_idv_code_status_t;


static ngx_http_idv_code_status_t  ngx_http_idv_code_statuses[] = {

    /* the service's codes */
    { ngx_string("MissingParameter"), NGX_HTTP_BAD_REQUEST },
    { ngx_string("InvalidParameter"), NGX_HTTP_BAD_REQUEST },
    { ngx_string("OcrFail"), NGX_HTTP_BAD_REQUEST },
    { ngx_string("UnqualifiedPhoto"), NGX_HTTP_BAD_REQUEST },
    { ngx_string("NoFaceDetected"), NGX_HTTP_BAD_REQUEST },
    { ngx_string("ToolargeImage"), NGX_HTTP_BAD_REQUEST },
    { ngx_string("DownloadTimeout"), NGX_HTTP_BAD_REQUEST },
    { ngx_string("DataDuplication"), NGX_HTTP_BAD_REQUEST },
    { ngx_string("HighRisk"), NGX_HTTP_FORBIDDEN },
    { ngx_string("Forbidden.RAMUserAccessDenied"), NGX_HTTP_FORBIDDEN },
    { ngx_string("Forbidden.AccountAccessDenied"), NGX_HTTP_FORBIDDEN },
    { ngx_string("Forbidden.ExceptionRepeatedInvoke"), NGX_HTTP_FORBIDDEN },
    { ngx_string("Forbidden.ExceptionDataSource"),
      NGX_HTTP_INTERNAL_SERVER_ERROR },
    { ngx_string("InternalError"), NGX_HTTP_INTERNAL_SERVER_ERROR },
    { ngx_string("ServiceUnavailable"), NGX_HTTP_SERVICE_UNAVAILABLE },

    /* the API gateway's: signing and access keys */
    { ngx_string("SignatureDoesNotMatch"), NGX_HTTP_BAD_REQUEST },
    { ngx_string("IncompleteSignature"), NGX_HTTP_BAD_REQUEST },
    { ngx_string("SignatureNonceUsed"), NGX_HTTP_BAD_REQUEST },
    { ngx_string("InvalidTimeStamp.Expired"), NGX_HTTP_BAD_REQUEST },
    { ngx_string("IllegalTimestamp"), NGX_HTTP_BAD_REQUEST },
    { ngx_string("MissingSignature"), NGX_HTTP_BAD_REQUEST },
    { ngx_string("MissingTimestamp"), NGX_HTTP_BAD_REQUEST },
    { ngx_string("MissingAccessKeyId"), NGX_HTTP_BAD_REQUEST },
    { ngx_string("InvalidAccessKeyId.NotFound"), NGX_HTTP_NOT_FOUND },
    { ngx_string("PathNotFound"), NGX_HTTP_NOT_FOUND },

    { ngx_null_string, 0 }
};


/*
 * Codes that say the operator's configuration is wrong (key, secret,
 * endpoint, clock, RAM policy): logged at [error] whatever their status,
 * once a minute per cause and worker, with the number of repeats since.
 * A trailing '*' matches any rest.
 */

#define NGX_HTTP_IDV_CONFIG_ERROR_INTERVAL  60

typedef struct {
    ngx_str_t   code;
    time_t      logged;
    ngx_uint_t  suppressed;
} ngx_http_idv_config_error_t;


static ngx_http_idv_config_error_t  ngx_http_idv_config_errors[] = {
    { ngx_string("SignatureDoesNotMatch"), 0, 0 },
    { ngx_string("IncompleteSignature"), 0, 0 },
    { ngx_string("InvalidAccessKeyId.*"), 0, 0 },
    { ngx_string("Forbidden.RAM*"), 0, 0 },
    { ngx_string("InvalidTimeStamp.*"), 0, 0 },
    { ngx_string("PathNotFound"), 0, 0 },
    { ngx_null_string, 0, 0 }
};


ngx_int_t
ngx_http_idv_handler(ngx_http_request_t *r)
{
    ngx_int_t            rc;
    ngx_table_elt_t     *allow;
    ngx_http_idv_ctx_t  *ctx;

    if (r != r->main) {
        return NGX_HTTP_NOT_FOUND;
    }

    ctx = ngx_http_idv_get_ctx(r);
    if (ctx == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (r->method != NGX_HTTP_POST) {

        rc = ngx_http_discard_request_body(r);
        if (rc != NGX_OK) {
            return rc;
        }

        allow = ngx_list_push(&r->headers_out.headers);
        if (allow == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        allow->hash = 1;
        ngx_str_set(&allow->key, "Allow");
        ngx_str_set(&allow->value, "POST");

        (void) ngx_http_idv_error(r, ctx, NGX_HTTP_NOT_ALLOWED,
                                  "Gateway.MethodNotAllowed",
                                  "Use POST with a JSON object or a form "
                                  "body");

        return ngx_http_idv_run(r, ctx);
    }

    rc = ngx_http_read_client_request_body(r, ngx_http_idv_body_handler);

    if (rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        return rc;
    }

    return NGX_DONE;
}


ngx_http_idv_ctx_t *
ngx_http_idv_get_ctx(ngx_http_request_t *r)
{
    ngx_http_idv_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_idv_module);

    if (ctx == NULL) {
        ctx = ngx_pcalloc(r->main->pool, sizeof(ngx_http_idv_ctx_t));
        if (ctx == NULL) {
            return NULL;
        }

        ctx->conf = ngx_http_get_module_loc_conf(r->main, ngx_http_idv_module);

        ngx_http_set_ctx(r->main, ctx, ngx_http_idv_module);
    }

    return ctx;
}


static void
ngx_http_idv_body_handler(ngx_http_request_t *r)
{
    ngx_int_t            rc;
    ngx_http_idv_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_idv_module);

    rc = ngx_http_idv_process(r, ctx);

    if (rc == NGX_DONE) {
        return;
    }

    ngx_http_finalize_request(r, rc);
}


static ngx_int_t
ngx_http_idv_process(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx)
{
    ngx_int_t                 rc;
    ngx_str_t                 body, *ct;
    ngx_pool_cleanup_t       *cln;
    ngx_http_idv_req_t       *rq;
    ngx_http_idv_loc_conf_t  *conf;

    conf = ctx->conf;
    rq = &ctx->req;

    /* the tenant first: logs and metrics of a refused request show it */

    if (conf->tenant) {
        if (ngx_http_complex_value(r, conf->tenant, &ctx->tenant) != NGX_OK) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (ctx->tenant.len == 0) {
            (void) ngx_http_idv_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                                      "Gateway.TenantRequired",
                                      "The request names no tenant "
                                      "(idv_tenant is empty)");
            return ngx_http_idv_run(r, ctx);
        }

        if (ctx->tenant.len > NGX_HTTP_IDV_NAME_MAX) {
            /* logs and metrics must not show it either */
            ngx_str_set(&ctx->tenant, "(too long)");

            (void) ngx_http_idv_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                                      "Gateway.TenantInvalid",
                                      "The tenant name is longer than 255 "
                                      "bytes");
            return ngx_http_idv_run(r, ctx);
        }
    }

    rc = ngx_http_idv_read_body(r, &body);
    if (rc != NGX_OK) {
        return rc;
    }

    ngx_http_idv_req_init(r, rq, conf);

    /* the location's product code labels even a body refused unparsed */
    rq->product.data = conf->product.data;
    rq->product.len = conf->product.len;

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    cln->handler = ngx_http_idv_req_cleanup;
    cln->data = rq;

    ct = r->headers_in.content_type ? &r->headers_in.content_type->value
                                    : NULL;

    if (ct && ct->len >= 33
        && ngx_strncasecmp(ct->data,
                           (u_char *) "application/x-www-form-urlencoded", 33)
           == 0)
    {
        rc = ngx_http_idv_req_parse_form(rq, body.data, body.len);

    } else if (ct == NULL
               || ngx_strlcasestrn(ct->data, ct->data + ct->len,
                                   (u_char *) "json", 4 - 1)
                  != NULL)
    {
        if (body.len == 0) {
            ngx_str_set(&body, "{}");
        }

        rc = ngx_http_idv_req_parse_json(rq, body.data, body.len);

    } else {
        (void) ngx_http_idv_error(r, ctx, NGX_HTTP_UNSUPPORTED_MEDIA_TYPE,
                                  "Gateway.UnsupportedMediaType",
                                  "Send application/json or "
                                  "application/x-www-form-urlencoded");
        return ngx_http_idv_run(r, ctx);
    }

    if (rc != 0) {
        (void) ngx_http_idv_error(r, ctx, rq->status, rq->code, rq->message);
        return ngx_http_idv_run(r, ctx);
    }

    return ngx_http_idv_start(r, ctx);
}


/*
 * The request's parameters are in ctx->req, from a backend's body or an
 * SDK's signed request: the location's product code, the ids the logs
 * show, the operation's rules; then the pipeline.
 */

ngx_int_t
ngx_http_idv_start(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx)
{
    ngx_http_idv_req_t       *rq;
    ngx_http_idv_param_t     *p;
    ngx_http_idv_loc_conf_t  *conf;

    conf = ctx->conf;
    rq = &ctx->req;

    /*
     * the location's product code is the gateway's to set (on the SDK
     * endpoint, for the actions that take one)
     */

    p = rq->nparams ? ngx_http_idv_req_get(rq, "ProductCode") : NULL;

    if (conf->product.len
        && ngx_http_idv_op_param(conf->op, (u_char *) "ProductCode",
                                 sizeof("ProductCode") - 1))
    {
        if (p && (p->value.len != conf->product.len
                  || ngx_memcmp(p->value.data, conf->product.data,
                                p->value.len) != 0))
        {
            (void) ngx_http_idv_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                                      "InvalidParameter",
                                      "ProductCode is set by the gateway for "
                                      "this location");
            return ngx_http_idv_run(r, ctx);
        }

        if (ngx_http_idv_req_set(rq, "ProductCode", conf->product.data,
                                 conf->product.len)
            != 0)
        {
            goto invalid;
        }

        rq->product.data = conf->product.data;
        rq->product.len = conf->product.len;

    } else if (p) {

        /* a client's code the action does not document: refused here */

        if (!ngx_http_idv_op_product_known(conf->op, p->value.data,
                                           p->value.len))
        {
            (void) ngx_http_idv_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                                      "InvalidParameter",
                                      "ProductCode is not one this action "
                                      "accepts");
            return ngx_http_idv_run(r, ctx);
        }

        rq->product = p->value;
    }

    p = rq->nparams ? ngx_http_idv_req_get(rq, "MerchantBizId") : NULL;
    if (p) {
        if (p->value.len > NGX_HTTP_IDV_NAME_MAX) {
            (void) ngx_http_idv_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                                      "InvalidParameter",
                                      "MerchantBizId is longer than 255 "
                                      "bytes");
            return ngx_http_idv_run(r, ctx);
        }

        ctx->merchant_biz_id.data = p->value.data;
        ctx->merchant_biz_id.len = p->value.len;
    }

    p = rq->nparams ? ngx_http_idv_req_get(rq, "TransactionId") : NULL;
    if (p) {
        if (p->value.len == 0) {
            /* names no transaction: the service would pick none, or any */
            (void) ngx_http_idv_error(r, ctx, NGX_HTTP_BAD_REQUEST,
                                      "InvalidParameter",
                                      "TransactionId is empty");
            return ngx_http_idv_run(r, ctx);
        }

        ctx->transaction_id.data = p->value.data;
        ctx->transaction_id.len = p->value.len;
    }

    if (ngx_http_idv_req_validate(rq) != 0) {
        goto invalid;
    }

    ctx->phase = NGX_HTTP_IDV_PHASE_CHECK;
    ctx->index = 0;

    return ngx_http_idv_run(r, ctx);

invalid:

    (void) ngx_http_idv_error(r, ctx, rq->status, rq->code, rq->message);

    return ngx_http_idv_run(r, ctx);
}


/*
 * The body in one piece: used in place when nginx read it into a single
 * buffer (client_body_buffer_size >= client_max_body_size), otherwise
 * joined once.
 */

ngx_int_t
ngx_http_idv_read_body(ngx_http_request_t *r, ngx_str_t *body)
{
    u_char       *p;
    size_t        len;
    ssize_t       n;
    ngx_buf_t    *b;
    ngx_chain_t  *cl;

    body->len = 0;
    body->data = (u_char *) "";

    if (r->request_body == NULL || r->request_body->bufs == NULL) {
        return NGX_OK;
    }

    cl = r->request_body->bufs;

    if (cl->next == NULL && !cl->buf->in_file) {
        body->data = cl->buf->pos;
        body->len = cl->buf->last - cl->buf->pos;
        return NGX_OK;
    }

    len = 0;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;
        len += b->in_file ? (size_t) (b->file_last - b->file_pos)
                          : (size_t) (b->last - b->pos);
    }

    p = ngx_pnalloc(r->pool, len);
    if (p == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    body->data = p;
    body->len = len;

    for (cl = r->request_body->bufs; cl; cl = cl->next) {
        b = cl->buf;

        if (!b->in_file) {
            if (b->last != b->pos) {
                p = ngx_cpymem(p, b->pos, b->last - b->pos);
            }

            continue;
        }

        n = ngx_read_file(b->file, p, b->file_last - b->file_pos,
                          b->file_pos);

        if (n != b->file_last - b->file_pos) {
            ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                          "idv: cannot read the client body from \"%V\"",
                          &b->file->name);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        p += n;
    }

    return NGX_OK;
}


static void
ngx_http_idv_req_cleanup(void *data)
{
    ngx_http_idv_req_t  *rq = data;

    ngx_http_idv_req_free(rq);
}


/* the pure core's allocators: aligned (structures), unaligned (bytes) */

void *
ngx_http_idv_palloc(void *pool, size_t size)
{
    return ngx_palloc(pool, size);
}


void *
ngx_http_idv_alloc(void *pool, size_t size)
{
    return ngx_pnalloc(pool, size);
}


/*
 * The pipeline.  Returns NGX_DONE while the request waits (for a
 * subrequest, a timer, a store), otherwise the rc to finalize it with.
 */

ngx_int_t
ngx_http_idv_run(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx)
{
    ngx_int_t   rc;
    ngx_uint_t  phase, n;

    if (ctx->answer.status && ctx->phase < NGX_HTTP_IDV_PHASE_ANSWER) {
        /* answered before the pipeline started (a refused request) */
        ctx->phase = NGX_HTTP_IDV_PHASE_ANSWER;
        ctx->index = 0;
    }

    for ( ;; ) {

        phase = ctx->phase;

        switch (phase) {

        case NGX_HTTP_IDV_PHASE_UPSTREAM:

            rc = ngx_http_idv_upstream_step(r, ctx);

            if (rc == NGX_AGAIN) {
                return NGX_DONE;
            }

            if (rc != NGX_OK && rc != NGX_HTTP_IDV_ANSWER) {
                (void) ngx_http_idv_failure(r, ctx, rc);
            }

            if (ctx->phase == NGX_HTTP_IDV_PHASE_UPSTREAM) {
                ctx->phase = NGX_HTTP_IDV_PHASE_ANSWER;
                ctx->index = 0;
            }

            break;

        case NGX_HTTP_IDV_PHASE_SEND:

            ctx->phase = NGX_HTTP_IDV_PHASE_DONE;
            r->write_event_handler = ngx_http_request_empty_handler;

            return ngx_http_idv_send_answer(r, ctx);

        case NGX_HTTP_IDV_PHASE_DONE:
            return NGX_DONE;

        default:

            if (ctx->index >= ngx_http_idv_nhandlers[phase]) {

                if (ngx_http_idv_window(phase + 1)
                    != ngx_http_idv_window(phase))
                {
                    if (ctx->gathering) {
                        /* the window's state calls, in one round trip */
                        if (ngx_http_idv_gather_flush(r, ctx) == NGX_AGAIN) {
                            return NGX_DONE;
                        }

                        break;
                    }

                    ctx->ngathered = 0;
                }

                ctx->phase++;
                ctx->index = 0;
                break;
            }

            if (ctx->ngathered && !ctx->gathering) {
                /* a state call of this handler the group did not run */
                if (ngx_http_idv_gather_skipped(r, ctx) == NGX_AGAIN) {
                    return NGX_DONE;
                }

            } else if (!ctx->gathering) {
                ngx_http_idv_gather_start(r, ctx);
            }

            n = ctx->ngathered;

            rc = ngx_http_idv_handlers[phase][ctx->index](r, ctx);

            if (ctx->gathering) {

                if (rc == NGX_OK || rc == NGX_DECLINED
                    || (rc == NGX_AGAIN && ctx->ngathered > n))
                {
                    /* went on, or waits for the group: the next one */
                    ctx->index++;
                    break;
                }

                ctx->gathering = 0;

                if (ctx->ngathered) {

                    if (ctx->answer.status) {
                        /*
                         * refused before anything was sent: the state
                         * calls gathered are dropped unsent (their
                         * handlers see no result and hold nothing)
                         */
                        ngx_http_idv_gather_end(ctx, 0);

                    } else {
                        /* waits: the group goes, the window again */
                        if (ngx_http_idv_gather_flush(r, ctx) == NGX_AGAIN)
                        {
                            return NGX_DONE;
                        }

                        break;
                    }
                }
            }

            if (rc == NGX_OK || rc == NGX_DECLINED) {
                ctx->index++;
                break;
            }

            if (rc == NGX_AGAIN) {
                return NGX_DONE;
            }

            if (rc != NGX_HTTP_IDV_ANSWER) {
                (void) ngx_http_idv_failure(r, ctx, rc);
            }

            if (phase >= NGX_HTTP_IDV_PHASE_ANSWER) {
                /* a replaced answer: the later handlers see the new one */
                ctx->index++;
                break;
            }

            ctx->phase = NGX_HTTP_IDV_PHASE_ANSWER;
            ctx->index = 0;
            break;
        }
    }
}


/* for the modules that suspended a request: go on from where it stopped */

void
ngx_http_idv_resume(ngx_http_request_t *r)
{
    ngx_int_t            rc;
    ngx_connection_t    *c;
    ngx_http_idv_ctx_t  *ctx;

    c = r->connection;

    ctx = ngx_http_get_module_ctx(r, ngx_http_idv_module);

    rc = ngx_http_idv_run(r, ctx);

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }

    ngx_http_run_posted_requests(c);
}


/* the main request's write event while a subrequest of the pipeline runs */

void
ngx_http_idv_wait_handler(ngx_http_request_t *r)
{
    ngx_int_t            rc;
    ngx_http_idv_ctx_t  *ctx;

    ctx = ngx_http_get_module_ctx(r, ngx_http_idv_module);

    if (ctx == NULL || (ctx->sr && !ctx->done)) {
        return;
    }

    rc = ngx_http_idv_run(r, ctx);

    if (rc != NGX_DONE) {
        ngx_http_finalize_request(r, rc);
    }
}


ngx_int_t
ngx_http_idv_add_handler(ngx_conf_t *cf, ngx_uint_t phase,
    ngx_http_idv_handler_pt handler)
{
    ngx_uint_t  i, n;

    if (phase >= NGX_HTTP_IDV_PHASE_DONE
        || phase == NGX_HTTP_IDV_PHASE_UPSTREAM
        || phase == NGX_HTTP_IDV_PHASE_SEND)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "idv: no handlers in pipeline phase %ui", phase);
        return NGX_ERROR;
    }

    n = ngx_http_idv_nhandlers[phase];

    for (i = 0; i < n; i++) {
        if (ngx_http_idv_handlers[phase][i] == handler) {
            return NGX_OK;
        }
    }

    if (n == NGX_HTTP_IDV_MAX_HANDLERS) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "idv: too many handlers in pipeline phase %ui",
                           phase);
        return NGX_ERROR;
    }

    ngx_http_idv_handlers[phase][n] = handler;
    ngx_http_idv_nhandlers[phase] = n + 1;

    return NGX_OK;
}


void
ngx_http_idv_handlers_reset(void)
{
    ngx_memzero(ngx_http_idv_nhandlers, sizeof(ngx_http_idv_nhandlers));
}


/* an internal failure of a handler becomes the request's answer */

static ngx_int_t
ngx_http_idv_failure(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_int_t rc)
{
    ngx_uint_t  status;

    status = (rc >= NGX_HTTP_SPECIAL_RESPONSE) ? (ngx_uint_t) rc
                                               : NGX_HTTP_INTERNAL_SERVER_ERROR;

    if (status >= NGX_HTTP_INTERNAL_SERVER_ERROR) {
        return ngx_http_idv_error(r, ctx, status, "Gateway.InternalError",
                                  "The gateway could not process the "
                                  "request");
    }

    return ngx_http_idv_error(r, ctx, status, "Gateway.Error",
                              "The gateway could not process the request");
}


/*
 * A pipeline handler's batch: NGX_AGAIN while the store works (b->pending
 * says so; the pipeline resumes, and the handler runs again, once it is
 * done), or the batch's outcome, b->rc.
 */

ngx_int_t
ngx_http_idv_state_call(ngx_http_request_t *r, ngx_http_idv_store_batch_t *b)
{
    ngx_int_t            rc;
    ngx_http_idv_ctx_t  *ctx;

    b->pool = r->pool;
    b->log = r->connection->log;
    b->handler = ngx_http_idv_state_done;
    b->data = r;
    b->next = NULL;

    ctx = ngx_http_get_module_ctx(r, ngx_http_idv_module);

    if (ctx && ctx->gathering && b->nops
        && b->ops[0].store->backend->cancel
        && ctx->ngathered < NGX_HTTP_IDV_GATHER_MAX)
    {
        /* sent with the window's other state calls */

        ctx->gathered[ctx->ngathered].batch = b;
        ctx->gathered[ctx->ngathered].phase = ctx->phase;
        ctx->gathered[ctx->ngathered].index = ctx->index;
        ctx->ngathered++;

        b->pending = 1;
        b->skipped = 0;

        return NGX_AGAIN;
    }

    rc = ngx_http_idv_store_run(b);

    b->pending = (rc == NGX_AGAIN);

    if (b->pending && ngx_http_idv_state_cleanup(r, b) != NGX_OK) {
        return NGX_ERROR;
    }

    return rc;
}


/* the request may end first (a worker shutting down): cancelled then */

static ngx_int_t
ngx_http_idv_state_cleanup(ngx_http_request_t *r,
    ngx_http_idv_store_batch_t *b)
{
    ngx_pool_cleanup_t  *cln;

    if (b->cleanup) {
        return NGX_OK;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        ngx_http_idv_store_cancel(b);
        b->pending = 0;
        b->rc = NGX_ERROR;
        return NGX_ERROR;
    }

    cln->handler = ngx_http_idv_state_cancel;
    cln->data = b;
    b->cleanup = 1;

    return NGX_OK;
}


/*
 * Gathering.  With zones on a server that answers later, the state calls
 * of a window of the pipeline -- CHECK to CHARGE before the call, ANSWER
 * after it -- go as one group, in one round trip: each handler of the
 * window runs, and one that makes a state call is taken as waiting for
 * it while the next ones run; at the window's end the group is sent, and
 * once it is in the window runs again from its start, every handler
 * finding its results.  The group stops at the first batch with a
 * declined ADD, CAS, BUCKET or CHECK (a replayed nonce, a flight or a
 * cached answer already there, a foreign owner, a limit reached): the
 * handlers after it act on it as they would have (their batches, not
 * run, are run on their own if they are reached again).
 */

static ngx_uint_t
ngx_http_idv_window(ngx_uint_t phase)
{
    if (phase <= NGX_HTTP_IDV_PHASE_CHARGE) {
        return 1;
    }

    return (phase == NGX_HTTP_IDV_PHASE_ANSWER) ? 2 : 0;
}


static void
ngx_http_idv_gather_start(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx)
{
    ngx_uint_t                 w;
    ngx_http_idv_main_conf_t  *imcf;

    w = ngx_http_idv_window(ctx->phase);

    /* the window's first handler, whichever phase of it has one */

    if (w == 0 || (ctx->gather_windows & (1 << w))) {
        return;
    }

    ctx->gather_windows |= (1 << w);

    imcf = ngx_http_get_module_main_conf(r, ngx_http_idv_module);

    if (!imcf->gather) {
        return;
    }

    ctx->gather_phase = ctx->phase;
    ctx->gathering = 1;
}


static ngx_int_t
ngx_http_idv_gather_flush(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx)
{
    ngx_int_t                    rc;
    ngx_uint_t                   i;
    ngx_http_idv_store_batch_t  *first;

    ctx->gathering = 0;

    if (ctx->ngathered == 0) {
        /* nothing went to a remote store: the window is done as it ran */
        return NGX_OK;
    }

    first = ctx->gathered[0].batch;

    for (i = 1; i < ctx->ngathered; i++) {
        ctx->gathered[i - 1].batch->next = ctx->gathered[i].batch;
    }

    ctx->gathered[ctx->ngathered - 1].batch->next = NULL;

    first->handler = ngx_http_idv_gather_done;
    first->data = r;

    rc = ngx_http_idv_store_run_group(first);

    if (rc == NGX_AGAIN) {
        ctx->group_pending = 1;

        if (ngx_http_idv_state_cleanup(r, first) != NGX_OK) {
            ngx_http_idv_gather_end(ctx, 1);
            return NGX_OK;
        }

        return NGX_AGAIN;
    }

    ngx_http_idv_gather_end(ctx, 1);

    return NGX_OK;
}


static void
ngx_http_idv_gather_done(ngx_http_idv_store_batch_t *b)
{
    ngx_http_request_t  *r;
    ngx_http_idv_ctx_t  *ctx;

    r = b->data;
    ctx = ngx_http_get_module_ctx(r, ngx_http_idv_module);

    ngx_http_idv_gather_end(ctx, 1);

    ngx_http_idv_resume(r);
}


/*
 * The window's group is done with: in (the window runs again from its
 * start), or dropped unsent (a refusal before it went).
 */

static void
ngx_http_idv_gather_end(ngx_http_idv_ctx_t *ctx, ngx_uint_t sent)
{
    ngx_uint_t                   i;
    ngx_http_idv_store_batch_t  *b;

    for (i = 0; i < ctx->ngathered; i++) {
        b = ctx->gathered[i].batch;
        b->pending = 0;
        b->next = NULL;

        if (!sent) {
            b->skipped = 1;
            b->rc = NGX_DECLINED;
        }
    }

    ctx->group_pending = 0;

    if (!sent) {
        ctx->ngathered = 0;
        return;
    }

    /* the handlers of the group's batch: their own again */
    ctx->gathered[0].batch->handler = ngx_http_idv_state_done;

    ctx->phase = ctx->gather_phase;
    ctx->index = 0;
}


/* the handler about to run had a batch the group did not run: run now */

static ngx_int_t
ngx_http_idv_gather_skipped(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx)
{
    ngx_uint_t                   i;
    ngx_http_idv_store_batch_t  *b;

    for (i = 0; i < ctx->ngathered; i++) {
        b = ctx->gathered[i].batch;

        if (b == NULL || ctx->gathered[i].phase != ctx->phase
            || ctx->gathered[i].index != ctx->index)
        {
            continue;
        }

        ctx->gathered[i].batch = NULL;

        if (b->skipped) {
            b->skipped = 0;

            if (ngx_http_idv_state_call(r, b) == NGX_AGAIN) {
                return NGX_AGAIN;
            }
        }
    }

    return NGX_OK;
}


static void
ngx_http_idv_state_cancel(void *data)
{
    ngx_http_idv_store_batch_t *b = data;

    if (b->pending) {
        ngx_http_idv_store_cancel(b);
        b->pending = 0;
    }
}


static void
ngx_http_idv_state_done(ngx_http_idv_store_batch_t *b)
{
    b->pending = 0;

    ngx_http_idv_resume(b->data);
}


/*
 * One operation whose outcome nothing waits for (a request that ends
 * releases what it held): run, and forgotten.
 */

void
ngx_http_idv_state_forget(ngx_http_request_t *r, ngx_http_idv_store_op_t *op)
{
    ngx_http_idv_store_batch_t  b;

    ngx_memzero(&b, sizeof(ngx_http_idv_store_batch_t));

    b.ops = op;
    b.nops = 1;
    b.pool = r->pool;
    b.log = r->connection->log;

    (void) ngx_http_idv_store_run(&b);
}


/*
 * A store that could not serve a handler: nothing was applied, and the
 * request is refused rather than let through without the guarantee the
 * store keeps.  The store has logged and counted it.
 */

ngx_int_t
ngx_http_idv_state_error(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_store_t *store, ngx_int_t rc)
{
    ngx_str_t  retry = ngx_string("1");

    if (ngx_http_idv_set_header(r, "Retry-After", &retry, 1) != NGX_OK) {
        return NGX_ERROR;
    }

    if (rc == NGX_HTTP_IDV_STORE_FULL) {
        return ngx_http_idv_error(r, ctx, NGX_HTTP_SERVICE_UNAVAILABLE,
                                  "Gateway.StateFull",
                                  "The gateway's state zone is full; the "
                                  "request was not sent");
    }

    return ngx_http_idv_error(r, ctx, NGX_HTTP_SERVICE_UNAVAILABLE,
                              "Gateway.StateUnavailable",
                              "The gateway's state store is unavailable; "
                              "the request was not sent");
}


/*
 * The core's phase: the signed call (PREPARE ran before each attempt),
 * then, once the subrequest is done, its answer or a retry.  NGX_OK with
 * the answer set, NGX_AGAIN while waiting, or an internal failure.
 */

static ngx_int_t
ngx_http_idv_upstream_step(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx)
{
    ngx_int_t  rc;

    if (ctx->index == 0) {
        rc = ngx_http_idv_upstream_call(r, ctx);

        if (rc != NGX_OK) {
            return rc;
        }

        ctx->index = 1;

        return NGX_AGAIN;
    }

    if (!ctx->done) {
        return NGX_AGAIN;
    }

    return ngx_http_idv_upstream_answer(r, ctx);
}


/*
 * The subrequest is done: the service's envelope becomes the answer, or
 * a failure becomes the gateway's error; a retry where it is safe.
 * NGX_OK with the answer set, NGX_AGAIN when a retry is scheduled.
 */

static ngx_int_t
ngx_http_idv_upstream_answer(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx)
{
    u_char                   *start, *end;
    ngx_int_t                 rc;
    ngx_str_t                 passed;
    ngx_uint_t                status, level;
    ngx_http_idv_envelope_t   env;

    if (ctx->failed || ctx->response == NULL) {

        rc = ngx_http_idv_retry(r, ctx);
        if (rc != NGX_DECLINED) {
            return rc;
        }

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "idv: %V failed: HTTP %ui from the upstream location, "
                      "MerchantBizId \"%V\"",
                      ngx_http_idv_ngx_str(&ctx->conf->op->name),
                      ctx->upstream_status, &ctx->merchant_biz_id);

        return ngx_http_idv_upstream_failed(r, ctx,
                                  ctx->too_large
                                  ? "The answer of ID Verification is too "
                                    "large for subrequest_output_buffer_size"
                                  : "The call to ID Verification failed");
    }

    start = ctx->response->pos;
    end = ctx->response->last;

    /* read without a tree: ngx_http_idv_answer_json() builds one on demand */

    ngx_str_null(&passed);

    if (ngx_http_idv_json_envelope(start, end - start, &env) != 0) {

        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "idv: %V failed: HTTP %ui with an answer that is not "
                      "an API envelope (%uz bytes), MerchantBizId \"%V\"",
                      ngx_http_idv_ngx_str(&ctx->conf->op->name),
                      ctx->upstream_status, (size_t) (end - start),
                      &ctx->merchant_biz_id);

        return ngx_http_idv_upstream_failed(r, ctx,
                                            "ID Verification answered with "
                                            "something that is not its JSON "
                                            "envelope");
    }

    if (ngx_http_idv_copy_string(r->pool, &env.code, &ctx->code) != NGX_OK
        || ngx_http_idv_copy_string(r->pool, &env.request_id,
                                    &ctx->request_id)
           != NGX_OK
        || ngx_http_idv_copy_string(r->pool, &env.transaction_id,
                                    &ctx->transaction_id)
           != NGX_OK
        || ngx_http_idv_copy_string(r->pool, &env.passed, &passed) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (passed.len == 1) {
        switch (passed.data[0]) {
        case 'Y':
        case 'T':
            ctx->passed = NGX_HTTP_IDV_PASSED_YES;
            break;
        case 'N':
        case 'F':
            ctx->passed = NGX_HTTP_IDV_PASSED_NO;
            break;
        }
    }

    if (ctx->code.len == 7 && ngx_strncmp(ctx->code.data, "Success", 7) == 0
        && ctx->upstream_status == NGX_HTTP_OK)
    {
        status = NGX_HTTP_OK;

    } else {
        status = ngx_http_idv_code_status(&ctx->code, ctx->upstream_status);
    }

    if (status != NGX_HTTP_OK) {

        rc = ngx_http_idv_retry(r, ctx);
        if (rc != NGX_DECLINED) {
            return rc;
        }

        /* the service's business outcomes (4xx) are not server errors */

        level = (status >= NGX_HTTP_INTERNAL_SERVER_ERROR) ? NGX_LOG_ERR
                                                             : NGX_LOG_WARN;

        if (ngx_http_idv_config_error(r, ctx)) {
            level = NGX_LOG_WARN;
        }

        ngx_log_error(level, r->connection->log, 0,
                      "idv: %V failed: HTTP %ui, code \"%V\", "
                      "RequestId \"%V\", TransactionId \"%V\", "
                      "MerchantBizId \"%V\"",
                      ngx_http_idv_ngx_str(&ctx->conf->op->name),
                      ctx->upstream_status, &ctx->code, &ctx->request_id,
                      &ctx->transaction_id, &ctx->merchant_biz_id);
    }

    if (status == NGX_HTTP_TOO_MANY_REQUESTS) {
        ngx_str_t  one = ngx_string("1");

        if (ngx_http_idv_set_header(r, "Retry-After", &one, 0) != NGX_OK) {
            return NGX_ERROR;
        }
    }

    (void) ngx_http_idv_reply(r, ctx, status, start, end, NULL);

    ctx->answer.upstream = 1;

    return NGX_OK;
}


/* no answer to relay: a timeout says so, anything else is the message */

static ngx_int_t
ngx_http_idv_upstream_failed(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    const char *message)
{
    if (ctx->upstream_status == NGX_HTTP_GATEWAY_TIME_OUT) {
        return ngx_http_idv_error(r, ctx, NGX_HTTP_GATEWAY_TIME_OUT,
                                  "Gateway.UpstreamTimeout",
                                  "ID Verification did not answer in time");
    }

    return ngx_http_idv_error(r, ctx, NGX_HTTP_BAD_GATEWAY,
                              "Gateway.UpstreamError", message);
}


/*
 * Retries only where a repeat cannot bill twice: reads (CheckResult and
 * the like) after a transport failure, a throttled answer or a transient
 * service error.  Each attempt is a new subrequest with a fresh nonce and
 * timestamp, after a jittered exponential backoff within a time budget.
 */

static ngx_int_t
ngx_http_idv_retry(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx)
{
    ngx_msec_t                delay;
    ngx_pool_cleanup_t       *cln;
    ngx_http_idv_loc_conf_t  *conf;

    conf = ctx->conf;

    if (!(conf->op->flags & NGX_HTTP_IDV_OP_RETRY_SAFE)
        || ctx->attempts > conf->retries)
    {
        return NGX_DECLINED;
    }

    if (!ctx->failed
        && ngx_strlcasestrn(ctx->code.data, ctx->code.data + ctx->code.len,
                            (u_char *) "Throttling", 10 - 1) == NULL
        && !(ctx->code.len == 13
             && ngx_strncmp(ctx->code.data, "InternalError", 13) == 0)
        && !(ctx->code.len == 18
             && ngx_strncmp(ctx->code.data, "ServiceUnavailable", 18) == 0))
    {
        return NGX_DECLINED;
    }

    if (ctx->too_large) {
        return NGX_DECLINED;
    }

    /* 50 ms, 100 ms, 200 ms, ... each with +-50% jitter */

    delay = 50 << (ctx->attempts - 1);
    delay = delay / 2 + (ngx_msec_t) ngx_random() % (delay + 1);

    if (ctx->backoff + delay > conf->retry_budget) {
        return NGX_DECLINED;
    }

    ctx->backoff += delay;

    ngx_log_error(NGX_LOG_WARN, r->connection->log, 0,
                  "idv: %V attempt %ui failed (HTTP %ui, code \"%V\"), "
                  "retrying in %Mms",
                  ngx_http_idv_ngx_str(&conf->op->name), ctx->attempts,
                  ctx->upstream_status, &ctx->code, delay);

    if (ctx->retry.handler == NULL) {
        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            return NGX_DECLINED;
        }

        cln->handler = ngx_http_idv_retry_cleanup;
        cln->data = ctx;

        ctx->retry.handler = ngx_http_idv_retry_handler;
        ctx->retry.data = r;
        ctx->retry.log = r->connection->log;
    }

    ctx->code.len = 0;
    ctx->request_id.len = 0;
    ctx->phase = NGX_HTTP_IDV_PHASE_PREPARE;
    ctx->index = 0;

    /* the timer, not the finished subrequest, wakes the request now */
    r->write_event_handler = ngx_http_request_empty_handler;

    ngx_add_timer(&ctx->retry, delay);

    return NGX_AGAIN;
}


static void
ngx_http_idv_retry_handler(ngx_event_t *ev)
{
    ngx_http_idv_resume(ev->data);
}


static void
ngx_http_idv_retry_cleanup(void *data)
{
    ngx_http_idv_ctx_t  *ctx = data;

    if (ctx->retry.timer_set) {
        ngx_del_timer(&ctx->retry);
    }
}


/*
 * The backend's status for a Code other than Success, the same whether
 * the service sent it with an HTTP status or inside a 200: the table's;
 * throttling of any kind 429 (with Retry-After); an unknown code keeps
 * the service's status when that is an error, else 400.
 */

static ngx_uint_t
ngx_http_idv_code_status(ngx_str_t *code, ngx_uint_t upstream_status)
{
    ngx_http_idv_code_status_t  *cs;

    for (cs = ngx_http_idv_code_statuses; cs->code.len; cs++) {
        if (cs->code.len == code->len
            && ngx_strncmp(cs->code.data, code->data, code->len) == 0)
        {
            return cs->status;
        }
    }

    if (ngx_strlcasestrn(code->data, code->data + code->len,
                         (u_char *) "Throttling", 10 - 1)
        != NULL)
    {
        return NGX_HTTP_TOO_MANY_REQUESTS;
    }

    if (upstream_status >= NGX_HTTP_BAD_REQUEST && upstream_status <= 599) {
        return upstream_status;
    }

    /* a refusal the table does not list yet: still a refusal */

    if (code->len >= 9 && ngx_strncmp(code->data, "Forbidden", 9) == 0) {
        return NGX_HTTP_FORBIDDEN;
    }

    return NGX_HTTP_BAD_REQUEST;
}


/*
 * A code that means the gateway's configuration is wrong goes to the
 * log at [error] (Debian's default error_log level hides [warn]), at
 * most once per interval for each cause in each worker.  No parameters,
 * no Message (it may quote the string to sign).  Returns 1 for such a
 * code, whether or not it was logged now.
 */

static ngx_uint_t
ngx_http_idv_config_error(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx)
{
    size_t                        len;
    time_t                        now;
    ngx_str_t                    *code;
    ngx_http_idv_config_error_t  *ce;

    code = &ctx->code;

    for (ce = ngx_http_idv_config_errors; ce->code.len; ce++) {

        len = ce->code.len;

        if (ce->code.data[len - 1] == '*') {
            len--;

            if (code->len <= len) {
                continue;
            }

        } else if (code->len != len) {
            continue;
        }

        if (ngx_strncmp(code->data, ce->code.data, len) == 0) {
            break;
        }
    }

    if (ce->code.len == 0) {
        return 0;
    }

    now = ngx_time();

    if (ce->logged && now - ce->logged < NGX_HTTP_IDV_CONFIG_ERROR_INTERVAL) {
        ce->suppressed++;
        return 1;
    }

    ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                  "idv: %V failed: HTTP %ui, code \"%V\", RequestId \"%V\": "
                  "check idv_access_key_id, idv_access_key_secret, "
                  "idv_endpoint, the key's RAM policy and the clock "
                  "(%ui more since the last such line)",
                  ngx_http_idv_ngx_str(&ctx->conf->op->name),
                  ctx->upstream_status, code, &ctx->request_id,
                  ce->suppressed);

    ce->logged = now;
    ce->suppressed = 0;

    return 1;
}


/*
 * a string the envelope scan found, decoded; these go into log lines and
 * variables: nothing but visible ASCII
 */

static ngx_int_t
ngx_http_idv_copy_string(ngx_pool_t *pool, ngx_http_idv_str_t *raw,
    ngx_str_t *dst)
{
    u_char      c;
    ngx_uint_t  i;

    if (raw->data == NULL) {
        return NGX_OK;
    }

    dst->data = ngx_pnalloc(pool, raw->len);
    if (dst->data == NULL) {
        return NGX_ERROR;
    }

    dst->len = ngx_http_idv_json_unescape(dst->data, raw->data, raw->len);

    for (i = 0; i < dst->len; i++) {
        c = dst->data[i];
        dst->data[i] = (c < ' ' || c >= 0x7f || c == '"' || c == '\\')
                       ? '?' : c;
    }

    return NGX_OK;
}

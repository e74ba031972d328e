
/*
 * ngx_http_idv_module: the signed upstream call.
 *
 * The call is an in-memory POST subrequest to the operator's internal
 * location (idv_pass), so TLS, keepalive, timeouts and resolving are
 * nginx's own.  The subrequest gets its own header list and body: nothing
 * of the backend's request (headers, cookies, body) reaches upstream.
 */


#include "ngx_http_idv_module.h"

#include <openssl/rand.h>


static ngx_int_t ngx_http_idv_upstream_done(ngx_http_request_t *sr,
    void *data, ngx_int_t rc);
static void ngx_http_idv_guard_handler(ngx_event_t *ev);
static void ngx_http_idv_guard_cleanup(void *data);
static u_char *ngx_http_idv_hex32(u_char *p, uint32_t v);
static u_char *ngx_http_idv_dec2(u_char *p, ngx_uint_t v);
static u_char *ngx_http_idv_timestamp(void);


static u_char *ngx_http_idv_log_error(ngx_http_request_t *r,
    ngx_http_request_t *sr, u_char *buf, size_t len);


static ngx_str_t  ngx_http_idv_post_method = ngx_string("POST");
static ngx_str_t  ngx_http_idv_form_type =
    ngx_string("application/x-www-form-urlencoded");

static ngx_http_log_handler_pt  ngx_http_idv_nginx_log_handler;

static uint64_t   ngx_http_idv_id_seed;
static uint32_t   ngx_http_idv_id_count;

/* the ids' first 24 hex digits: the process's seed and pid */
static u_char     ngx_http_idv_id_prefix[24];
static ngx_uint_t ngx_http_idv_id_ready;


/* the timestamp of the current second, formatted once */
static time_t     ngx_http_idv_ts_sec = -1;
static u_char     ngx_http_idv_ts[NGX_HTTP_IDV_TIMESTAMP_LEN];


/* the headers of a signed call (NGX_HTTP_IDV_H_*): lower-cased and
   hashed once */

typedef struct {
    ngx_str_t                   key;
    ngx_uint_t                  hash;
    u_char                      lowcase[40];
} ngx_http_idv_header_key_t;


static ngx_http_idv_header_key_t  ngx_http_idv_header_keys[] = {
    { ngx_string("content-type"), 0, "" },
    { ngx_string("x-acs-action"), 0, "" },
    { ngx_string("x-acs-version"), 0, "" },
    { ngx_string("x-acs-date"), 0, "" },
    { ngx_string("x-acs-signature-nonce"), 0, "" },
    { ngx_string("x-acs-content-sha256"), 0, "" },
    { ngx_string("Authorization"), 0, "" },
    { ngx_string("x-acs-security-token"), 0, "" },
    { ngx_string("X-aliyun-ecs-metadata-token-ttl-seconds"), 0, "" },
    { ngx_string("X-aliyun-ecs-metadata-token"), 0, "" },
    { ngx_null_string, 0, "" }
};


ngx_int_t
ngx_http_idv_init_process_handler(ngx_cycle_t *cycle)
{
    /* nonces must be unique, not secret: a random seed per process */

    if (RAND_bytes((u_char *) &ngx_http_idv_id_seed,
                   sizeof(ngx_http_idv_id_seed))
        != 1)
    {
        ngx_http_idv_id_seed = (uint64_t) ngx_random() << 32 ^ ngx_random()
                               ^ (uint64_t) ngx_time();
    }

    ngx_http_idv_id_ready = 0;

    return NGX_OK;
}


/* at configuration: the constant header keys, lower-cased and hashed */

void
ngx_http_idv_upstream_init(void)
{
    ngx_http_idv_header_key_t  *k;

    for (k = ngx_http_idv_header_keys; k->key.len; k++) {
        k->hash = ngx_hash_strlow(k->lowcase, k->key.data, k->key.len);
    }
}


static u_char *
ngx_http_idv_hex32(u_char *p, uint32_t v)
{
    static u_char  hex[] = "0123456789abcdef";

    p[0] = hex[v >> 28];
    p[1] = hex[(v >> 24) & 0xf];
    p[2] = hex[(v >> 20) & 0xf];
    p[3] = hex[(v >> 16) & 0xf];
    p[4] = hex[(v >> 12) & 0xf];
    p[5] = hex[(v >> 8) & 0xf];
    p[6] = hex[(v >> 4) & 0xf];
    p[7] = hex[v & 0xf];

    return p + 8;
}


/* 32 hex digits: the process's seed and pid, then a counter */

void
ngx_http_idv_make_id(u_char *dst)
{
    u_char  *p;

    if (!ngx_http_idv_id_ready) {
        p = ngx_http_idv_hex32(ngx_http_idv_id_prefix,
                               (uint32_t) (ngx_http_idv_id_seed >> 32));
        p = ngx_http_idv_hex32(p, (uint32_t) ngx_http_idv_id_seed);
        (void) ngx_http_idv_hex32(p, (uint32_t) ngx_pid);

        ngx_http_idv_id_ready = 1;
    }

    dst = ngx_cpymem(dst, ngx_http_idv_id_prefix, 24);
    (void) ngx_http_idv_hex32(dst, ++ngx_http_idv_id_count);
}


static u_char *
ngx_http_idv_dec2(u_char *p, ngx_uint_t v)
{
    p[0] = (u_char) ('0' + v / 10 % 10);
    p[1] = (u_char) ('0' + v % 10);

    return p + 2;
}


/* YYYY-MM-DDTHH:MM:SSZ of this second, formatted when the second changes */

static u_char *
ngx_http_idv_timestamp(void)
{
    u_char    *p;
    time_t     now;
    ngx_tm_t   tm;

    now = ngx_time();

    if (now == ngx_http_idv_ts_sec) {
        return ngx_http_idv_ts;
    }

    ngx_gmtime(now, &tm);

    p = ngx_http_idv_dec2(ngx_http_idv_ts, tm.ngx_tm_year / 100);
    p = ngx_http_idv_dec2(p, tm.ngx_tm_year);
    *p++ = '-';
    p = ngx_http_idv_dec2(p, tm.ngx_tm_mon);
    *p++ = '-';
    p = ngx_http_idv_dec2(p, tm.ngx_tm_mday);
    *p++ = 'T';
    p = ngx_http_idv_dec2(p, tm.ngx_tm_hour);
    *p++ = ':';
    p = ngx_http_idv_dec2(p, tm.ngx_tm_min);
    *p++ = ':';
    p = ngx_http_idv_dec2(p, tm.ngx_tm_sec);
    *p = 'Z';

    ngx_http_idv_ts_sec = now;

    return ngx_http_idv_ts;
}


/* the time of a signed call, YYYY-MM-DDTHH:MM:SSZ, and a fresh nonce */

u_char *
ngx_http_idv_sign_time(ngx_pool_t *pool)
{
    u_char  *ts;

    /* the headers point at them until the subrequest is sent: copied */

    ts = ngx_pnalloc(pool, NGX_HTTP_IDV_TIMESTAMP_LEN + 32);
    if (ts == NULL) {
        return NULL;
    }

    ngx_memcpy(ts, ngx_http_idv_timestamp(), NGX_HTTP_IDV_TIMESTAMP_LEN);
    ngx_http_idv_make_id(ts + NGX_HTTP_IDV_TIMESTAMP_LEN);

    return ts;
}


ngx_int_t
ngx_http_idv_upstream_call(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx)
{
    u_char                   *ts, *nonce, *hash;
    ngx_str_t                 args, body;
    ngx_list_t               *headers;
    ngx_http_request_t       *sr;
    ngx_http_idv_sign_t       s;
    ngx_http_idv_loc_conf_t  *conf;

    conf = ctx->conf;

    ts = ngx_http_idv_sign_time(r->pool);
    if (ts == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    nonce = ts + NGX_HTTP_IDV_TIMESTAMP_LEN;

    ngx_memzero(&s, sizeof(ngx_http_idv_sign_t));

    s.algorithm = (int) conf->signature;

    if (conf->source) {
        /* the temporary credentials PREPARE found for this attempt */
        s.access_key_id.data = ctx->key.id.data;
        s.access_key_id.len = ctx->key.id.len;
        s.access_key_secret.data = ctx->key.secret.data;
        s.access_key_secret.len = ctx->key.secret.len;
        s.security_token.data = ctx->key.token.data;
        s.security_token.len = ctx->key.token.len;

    } else {
        s.access_key_id.data = conf->access_key_id.data;
        s.access_key_id.len = conf->access_key_id.len;
        s.access_key_secret.data = conf->access_key_secret.data;
        s.access_key_secret.len = conf->access_key_secret.len;
    }
    s.host.data = conf->endpoint.data;
    s.host.len = conf->endpoint.len;
    s.action = conf->op->name;
    s.version.data = (u_char *) NGX_HTTP_IDV_API_VERSION;
    s.version.len = sizeof(NGX_HTTP_IDV_API_VERSION) - 1;
    s.timestamp.data = ts;
    s.timestamp.len = NGX_HTTP_IDV_TIMESTAMP_LEN;
    s.nonce.data = nonce;
    s.nonce.len = 32;
    s.params = ctx->req.params;
    s.nparams = ctx->req.nparams;
    s.form = (conf->op->flags & NGX_HTTP_IDV_OP_FORM) ? 1 : 0;
    s.alloc = ngx_http_idv_alloc;
    s.alloc_data = r->pool;

    if (ngx_http_idv_sign(&s) != 0) {
        ngx_log_error(NGX_LOG_ERR, r->connection->log, 0,
                      "idv: signing %V failed",
                      ngx_http_idv_ngx_str(&conf->op->name));
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    ngx_log_debug5(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "idv: %V signed with %s, nonce %V, %uz query bytes, "
                   "%uz body bytes",
                   ngx_http_idv_ngx_str(&conf->op->name),
                   s.algorithm == NGX_HTTP_IDV_SIGN_V3 ? "v3" : "v1",
                   ngx_http_idv_ngx_str(&s.nonce), s.query.len, s.body.len);

    args.data = s.query.data;
    args.len = s.query.len;
    body.data = s.body.data;
    body.len = s.body.len;

    sr = ngx_http_idv_subrequest(r, ctx, &conf->pass, &args, &body,
                                 s.form ? &ngx_http_idv_form_type : NULL);
    if (sr == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    headers = &sr->headers_in.headers;

    if (ngx_http_idv_push_header(headers, NGX_HTTP_IDV_H_ACTION,
                                 s.action.data, s.action.len) == NULL
        || ngx_http_idv_push_header(headers, NGX_HTTP_IDV_H_VERSION,
                                    s.version.data, s.version.len) == NULL)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    if (s.algorithm == NGX_HTTP_IDV_SIGN_V3) {

        /* the digest lives in the signer's struct, on this stack frame */

        hash = ngx_pnalloc(r->pool, sizeof(s.content_sha256));
        if (hash == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_memcpy(hash, s.content_sha256, sizeof(s.content_sha256));

        if (ngx_http_idv_push_header(headers, NGX_HTTP_IDV_H_DATE,
                                     s.timestamp.data, s.timestamp.len)
            == NULL
            || ngx_http_idv_push_header(headers, NGX_HTTP_IDV_H_NONCE,
                                        s.nonce.data, s.nonce.len)
               == NULL
            || ngx_http_idv_push_header(headers,
                                        NGX_HTTP_IDV_H_CONTENT_SHA256,
                                        hash, sizeof(s.content_sha256))
               == NULL
            || ngx_http_idv_push_header(headers, NGX_HTTP_IDV_H_AUTHORIZATION,
                                        s.authorization.data,
                                        s.authorization.len)
               == NULL)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        if (s.security_token.len
            && ngx_http_idv_push_header(headers,
                                        NGX_HTTP_IDV_H_SECURITY_TOKEN,
                                        s.security_token.data,
                                        s.security_token.len)
               == NULL)
        {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    ctx->attempts++;

    return NGX_OK;
}


/*
 * A POST subrequest with its own header list and body, answered into
 * ctx->response.  The subrequest's headers_in starts as a copy of the
 * backend's request, whose list storage it shares: it gets a fresh list,
 * so no header, cookie or body of the backend's request goes along.
 */

ngx_http_request_t *
ngx_http_idv_subrequest(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_str_t *uri, ngx_str_t *args, ngx_str_t *body, ngx_str_t *type)
{
    ngx_buf_t                    *b;
    ngx_chain_t                  *cl;
    ngx_table_elt_t              *ct;
    ngx_pool_cleanup_t           *cln;
    ngx_http_request_t           *sr;
    ngx_http_request_body_t      *rb;
    ngx_http_post_subrequest_t   *ps;

    ps = ngx_palloc(r->pool, sizeof(ngx_http_post_subrequest_t));
    if (ps == NULL) {
        return NULL;
    }

    ps->handler = ngx_http_idv_upstream_done;
    ps->data = ctx;

    if (ngx_http_subrequest(r, uri, args, &sr, ps,
                            NGX_HTTP_SUBREQUEST_IN_MEMORY
                            |NGX_HTTP_SUBREQUEST_WAITED)
        != NGX_OK)
    {
        return NULL;
    }

    sr->method = NGX_HTTP_POST;
    sr->method_name = ngx_http_idv_post_method;

    if (ngx_list_init(&sr->headers_in.headers, r->pool, 8,
                      sizeof(ngx_table_elt_t))
        != NGX_OK)
    {
        return NULL;
    }

    sr->headers_in.content_type = NULL;
    sr->headers_in.content_length = NULL;
    sr->headers_in.transfer_encoding = NULL;
    sr->headers_in.user_agent = NULL;
    sr->headers_in.referer = NULL;
    sr->headers_in.authorization = NULL;
    sr->headers_in.cookies.nelts = 0;
    sr->headers_in.chunked = 0;
    sr->headers_in.content_length_n = body->len;

    if (type) {
        ct = ngx_http_idv_push_header(&sr->headers_in.headers,
                                      NGX_HTTP_IDV_H_CONTENT_TYPE,
                                      type->data, type->len);
        if (ct == NULL) {
            return NULL;
        }

        sr->headers_in.content_type = ct;
    }

    rb = ngx_pcalloc(r->pool, sizeof(ngx_http_request_body_t));
    if (rb == NULL) {
        return NULL;
    }

    if (body->len) {
        b = ngx_calloc_buf(r->pool);
        if (b == NULL) {
            return NULL;
        }

        b->start = body->data;
        b->pos = b->start;
        b->last = b->start + body->len;
        b->end = b->last;
        b->memory = 1;
        b->last_buf = 1;

        cl = ngx_alloc_chain_link(r->pool);
        if (cl == NULL) {
            return NULL;
        }

        cl->buf = b;
        cl->next = NULL;

        rb->bufs = cl;
    }

    sr->request_body = rb;

    ngx_http_idv_log_mask(r);

    ctx->sr = sr;
    ctx->done = 0;
    ctx->failed = 0;
    ctx->too_large = 0;
    ctx->response = NULL;
    ctx->upstream_status = 0;
    ctx->start = ngx_current_msec;

    /* the pipeline goes on once the subrequest is done */
    r->write_event_handler = ngx_http_idv_wait_handler;

    /*
     * Once the subrequest has started its upstream, it is made to ignore
     * the client going away: the service may have the call already (an
     * Initialize is billed), so its answer must land (in the cache, the
     * replay guard) whatever the client does, as with
     * "proxy_ignore_client_abort on" in the location.
     */

    if (ctx->guard.handler == NULL) {
        cln = ngx_pool_cleanup_add(r->pool, 0);
        if (cln == NULL) {
            return NULL;
        }

        cln->handler = ngx_http_idv_guard_cleanup;
        cln->data = ctx;

        ctx->guard.handler = ngx_http_idv_guard_handler;
        ctx->guard.log = r->connection->log;
    }

    ctx->guard.data = sr;

    if (!ctx->guard.posted) {
        ngx_post_event(&ctx->guard, &ngx_posted_events);
    }

    return sr;
}


static void
ngx_http_idv_guard_handler(ngx_event_t *ev)
{
    ngx_http_request_t  *sr = ev->data;

    ngx_http_upstream_t  *u;

    u = sr->upstream;

    if (u == NULL || sr->done) {
        return;
    }

    /* the same for every request of the location: set once, kept */
    u->conf->ignore_client_abort = 1;

    sr->read_event_handler = ngx_http_block_reading;
    sr->write_event_handler = ngx_http_request_empty_handler;
}


static void
ngx_http_idv_guard_cleanup(void *data)
{
    ngx_http_idv_ctx_t  *ctx = data;

    if (ctx->guard.posted) {
        ngx_delete_posted_event(&ctx->guard);
    }
}


ngx_table_elt_t *
ngx_http_idv_push_header(ngx_list_t *list, ngx_uint_t key, u_char *value,
    size_t len)
{
    ngx_table_elt_t            *h;
    ngx_http_idv_header_key_t  *k;

    h = ngx_list_push(list);
    if (h == NULL) {
        return NULL;
    }

    k = &ngx_http_idv_header_keys[key];

    h->key = k->key;
    h->lowcase_key = k->lowcase;
    h->hash = k->hash;
    h->value.data = value;
    h->value.len = len;

    return h;
}


/*
 * The subrequest's answer, collected by the body filter before nginx's
 * in-memory postpone filter sees it: that one fails the whole connection
 * when an answer exceeds subrequest_output_buffer_size.  Here the same
 * limit (of the idv_pass location) gives a clean "too large" instead, and
 * an answer of known length gets a buffer of exactly that size.
 */

ngx_int_t
ngx_http_idv_upstream_capture(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_chain_t *in)
{
    size_t                     size, len;
    ssize_t                    n;
    ngx_buf_t                 *b, *buf;
    ngx_http_core_loc_conf_t  *clcf;

    b = ctx->response;

    if (b == NULL && !ctx->too_large) {
        clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

        size = clcf->subrequest_output_buffer_size;

        if (r->headers_out.content_length_n > (off_t) size) {
            ctx->too_large = 1;

        } else {
            if (r->headers_out.content_length_n >= 0) {
                size = (size_t) r->headers_out.content_length_n;
            }

            b = ngx_create_temp_buf(r->pool, size ? size : 1);
            if (b == NULL) {
                return NGX_ERROR;
            }

            ctx->response = b;
        }
    }

    for ( /* void */ ; in; in = in->next) {
        buf = in->buf;

        if (ngx_buf_in_memory(buf)) {
            len = buf->last - buf->pos;

        } else if (buf->in_file) {
            len = buf->file_last - buf->file_pos;

        } else {
            continue;
        }

        if (ctx->too_large || len > (size_t) (b->end - b->last)) {
            ctx->too_large = 1;

        } else if (ngx_buf_in_memory(buf)) {
            b->last = ngx_cpymem(b->last, buf->pos, len);

        } else {
            n = ngx_read_file(buf->file, b->last, len, buf->file_pos);

            if (n != (ssize_t) len) {
                return NGX_ERROR;
            }

            b->last += n;
        }

        buf->pos = buf->last;
        buf->file_pos = buf->file_last;
    }

    return NGX_OK;
}


/*
 * Runs when the subrequest is finalized.  On upstream errors nginx would
 * call it with the error as rc and then again after rendering an error
 * page; the first call is recorded and turned into NGX_OK so that the
 * main request answers with a JSON error of its own.
 */

static ngx_int_t
ngx_http_idv_upstream_done(ngx_http_request_t *sr, void *data, ngx_int_t rc)
{
    ngx_http_idv_ctx_t  *ctx = data;

    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, sr->connection->log, 0,
                   "idv: upstream done rc:%i status:%ui too large:%d",
                   rc, sr->headers_out.status, ctx->too_large);

    if (ctx->done) {
        return rc;
    }

    ctx->done = 1;
    ctx->upstream_time = ngx_current_msec - ctx->start;

    if (sr->connection->error) {
        return rc;
    }

    if (rc == NGX_ERROR || rc >= NGX_HTTP_SPECIAL_RESPONSE) {
        ctx->failed = 1;
        ctx->upstream_status = (rc == NGX_ERROR) ? 0 : (ngx_uint_t) rc;
        return NGX_OK;
    }

    ctx->upstream_status = sr->headers_out.status;

    if (ctx->too_large) {
        ctx->failed = 1;

    } else if (sr->headers_out.content_length_n >= 0
               && (ctx->response == NULL
                   || ctx->response->last - ctx->response->pos
                      < sr->headers_out.content_length_n))
    {
        /*
         * the connection was cut after the headers: less than the
         * announced answer arrived, a transport failure (reads retry)
         */

        ngx_log_error(NGX_LOG_ERR, sr->connection->log, 0,
                      "idv: the answer of the upstream location was cut "
                      "short: %O of %O bytes",
                      ctx->response ? (off_t) (ctx->response->last
                                               - ctx->response->pos)
                                    : (off_t) 0,
                      sr->headers_out.content_length_n);

        ctx->failed = 1;
        ctx->upstream_status = NGX_HTTP_BAD_GATEWAY;
    }

    return rc;
}


void
ngx_http_idv_log_mask(ngx_http_request_t *r)
{
    if (r->log_handler != ngx_http_idv_log_error) {
        /*
         * nginx's handler is the same for every request; kept outside the
         * ctx too, which an internal redirect (error_page) clears
         */
        ngx_http_idv_nginx_log_handler = r->log_handler;
        r->log_handler = ngx_http_idv_log_error;
    }
}


/*
 * nginx adds "upstream: <URL>" to every error line about the upstream
 * call (timeouts, refused connections, bad answers), query string
 * included; the API puts some PII parameters there.  It also adds the
 * client's request line, which for a result callback carries the
 * callback token.  Both keep their path, not their parameters.
 */

static u_char *
ngx_http_idv_log_error(ngx_http_request_t *r, ngx_http_request_t *sr,
    u_char *buf, size_t len)
{
    u_char               *p, *q;
    ngx_str_t             uri, line;
    ngx_http_upstream_t  *u;

    u = (sr && sr != r) ? sr->upstream : NULL;

    uri = u ? u->uri : (ngx_str_t) ngx_null_string;
    line = r->request_line;

    if (u && u->uri.len) {
        q = ngx_strlchr(uri.data, uri.data + uri.len, '?');
        if (q) {
            u->uri.len = q - uri.data;
        }
    }

    if (line.len) {
        q = ngx_strlchr(line.data, line.data + line.len, '?');
        if (q) {
            /* "GET /idv/callback?... HTTP/1.1" -> "GET /idv/callback" */
            r->request_line.len = q - line.data;
        }
    }

    p = ngx_http_idv_nginx_log_handler(r, sr, buf, len);

    if (u) {
        u->uri = uri;
    }

    r->request_line = line;

    return p;
}

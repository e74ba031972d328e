
/*
 * ngx_http_idv_module: answers in the API's envelope.
 *
 * Every answer of an idv location is rendered here, in the location's
 * dialect.  The gateway's: an upstream envelope goes back byte for byte
 * with a "Gateway" member spliced in before its closing brace, and
 * errors the gateway raises itself use the same shape.  The SDK
 * endpoint's: the service's answer goes back unchanged, and errors take
 * the service's own error shape, which the official SDKs parse.  A filter
 * gives nginx's own error pages in these locations (413 for a body over
 * client_max_body_size, 500, ...) the same shape.
 */


#include "ngx_http_idv_module.h"
#include "ngx_http_idv_json.h"

#include <cjson/cJSON.h>


static u_char *ngx_http_idv_gateway_json(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_uint_t status, size_t *len);
static void ngx_http_idv_gateway(ngx_http_idv_ctx_t *ctx,
    ngx_http_idv_gateway_t *gw);
static ngx_buf_t *ngx_http_idv_error_buf(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_uint_t status, const char *code,
    const char *message, ngx_uint_t service);
static ngx_buf_t *ngx_http_idv_sdk_error_buf(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, const char *code, const char *message);
static ngx_int_t ngx_http_idv_send_envelope(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_uint_t status, void *json, u_char *start,
    u_char *end);
static ngx_int_t ngx_http_idv_output(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_uint_t status, ngx_chain_t *out,
    off_t len);
static void ngx_http_idv_expand_json(cJSON *root);
static void ngx_http_idv_json_cleanup(void *data);
static ngx_int_t ngx_http_idv_header_filter(ngx_http_request_t *r);
static ngx_int_t ngx_http_idv_body_filter(ngx_http_request_t *r,
    ngx_chain_t *in);


static ngx_http_output_header_filter_pt  ngx_http_next_header_filter;
static ngx_http_output_body_filter_pt    ngx_http_next_body_filter;


static ngx_str_t  ngx_http_idv_json_type = ngx_string("application/json");

/* what an id is measured by: any 32 characters that need no escape */
static u_char     ngx_http_idv_no_id[NGX_HTTP_IDV_REQUEST_ID_LEN + 1] =
    "00000000000000000000000000000000";

/* the service answers application/json;charset=utf-8: so does the SDK's */
static ngx_str_t  ngx_http_idv_sdk_json_type =
    ngx_string("application/json;charset=utf-8");


/* nginx's own error pages, in each dialect */

typedef struct {
    ngx_uint_t                  status;
    const char                 *code;
    const char                 *message;
    const char                 *sdk_code;
    const char                 *sdk_message;
} ngx_http_idv_error_page_t;


static ngx_http_idv_error_page_t  ngx_http_idv_error_pages[] = {

    { NGX_HTTP_REQUEST_ENTITY_TOO_LARGE,
      "Gateway.BodyTooLarge",
      "The request body is larger than client_max_body_size",
      "Gateway.BodyTooLarge",
      "The request body is larger than client_max_body_size." },

    { NGX_HTTP_BAD_REQUEST,
      "InvalidParameter", "The HTTP request is malformed",
      "InvalidParameter", "The HTTP request is malformed." },

    { NGX_HTTP_REQUEST_TIME_OUT,
      "Gateway.RequestTimeout", "The request body was not received in time",
      "Gateway.RequestTimeout",
      "The request body was not received in time." },

    { NGX_HTTP_TOO_MANY_REQUESTS,
      "Gateway.Throttled", "Too many requests",
      "Throttling", "Request was denied due to request throttling." },

    { NGX_HTTP_SERVICE_UNAVAILABLE,
      "Gateway.Unavailable", "The gateway cannot take the request now",
      "ServiceUnavailable",
      "The request has failed due to a temporary failure of the server." },

    { 0, NULL, NULL, NULL, NULL }
};


static u_char *
ngx_http_idv_gateway_json(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_uint_t status, size_t *len)
{
    u_char                  *start;
    ngx_http_idv_gateway_t   gw;

    ngx_http_idv_gateway(ctx, &gw);

    *len = ngx_http_idv_json_gateway(NULL, &gw);

    start = ngx_pnalloc(r->pool, *len);
    if (start == NULL) {
        return NULL;
    }

    (void) ngx_http_idv_json_gateway(start, &gw);

    return start;
}


/*
 * what the "Gateway" member says: action and product code from the
 * configuration and the request, the tenant from a variable (a header,
 * say); every one escaped by the writer
 */

static void
ngx_http_idv_gateway(ngx_http_idv_ctx_t *ctx, ngx_http_idv_gateway_t *gw)
{
    ngx_memzero(gw, sizeof(ngx_http_idv_gateway_t));

    gw->action = ctx->conf->op->name;
    gw->product = ctx->req.product;
    gw->tenant.data = ctx->tenant.data;
    gw->tenant.len = ctx->tenant.len;
    gw->cached = ctx->cached;
    gw->attempts = ctx->attempts;
    gw->upstream_status = ctx->upstream_status;
    gw->upstream_ms = ctx->upstream_time;
    gw->passed = (ctx->passed == NGX_HTTP_IDV_PASSED_YES) ? 1
                 : (ctx->passed == NGX_HTTP_IDV_PASSED_NO) ? 2 : 0;
}


static ngx_buf_t *
ngx_http_idv_error_buf(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_uint_t status, const char *code, const char *message,
    ngx_uint_t service)
{
    u_char                  *id;
    size_t                   len, code_len, msg_len;
    ngx_buf_t               *b;
    ngx_http_idv_gateway_t   gw;

    if (service || ctx->conf->op == NULL) {
        return ngx_http_idv_sdk_error_buf(r, ctx, code, message);
    }

    ngx_http_idv_gateway(ctx, &gw);

    code_len = ngx_strlen(code);
    msg_len = ngx_strlen(message);

    len = ngx_http_idv_json_error(NULL, ngx_http_idv_no_id, (u_char *) code,
                                  code_len, (u_char *) message, msg_len,
                                  &gw);

    b = ngx_create_temp_buf(r->pool, NGX_HTTP_IDV_REQUEST_ID_LEN + len);
    if (b == NULL) {
        return NULL;
    }

    /* the id first, where it stays: $idv_request_id points at it */

    id = b->end - NGX_HTTP_IDV_REQUEST_ID_LEN;
    ngx_http_idv_make_id(id);

    b->last += ngx_http_idv_json_error(b->last, id, (u_char *) code,
                                       code_len, (u_char *) message, msg_len,
                                       &gw);

    b->last_buf = (r == r->main) ? 1 : 0;
    b->last_in_chain = 1;

    ctx->code.data = (u_char *) code;
    ctx->code.len = code_len;

    if (ctx->request_id.len == 0) {
        ctx->request_id.data = id;
        ctx->request_id.len = NGX_HTTP_IDV_REQUEST_ID_LEN;
    }

    return b;
}


static ngx_buf_t *
ngx_http_idv_sdk_error_buf(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    const char *code, const char *message)
{
    u_char     *id;
    size_t      len, code_len, msg_len;
    ngx_buf_t  *b;
    ngx_str_t   host;

    if (r->headers_in.host) {
        host = r->headers_in.host->value;

    } else {
        ngx_str_null(&host);
    }

    code_len = ngx_strlen(code);
    msg_len = ngx_strlen(message);

    len = ngx_http_idv_json_service_error(NULL, ngx_http_idv_no_id,
                                          (u_char *) code, code_len,
                                          (u_char *) message, msg_len,
                                          host.data, host.len);

    b = ngx_create_temp_buf(r->pool, NGX_HTTP_IDV_REQUEST_ID_LEN + len);
    if (b == NULL) {
        return NULL;
    }

    id = b->end - NGX_HTTP_IDV_REQUEST_ID_LEN;
    ngx_http_idv_make_id(id);

    b->last += ngx_http_idv_json_service_error(b->last, id, (u_char *) code,
                                               code_len, (u_char *) message,
                                               msg_len, host.data, host.len);

    b->last_buf = 1;
    b->last_in_chain = 1;

    /* what $idv_code, $idv_request_id and the metrics show */

    ctx->code.data = (u_char *) code;
    ctx->code.len = code_len;
    ctx->request_id.data = id;
    ctx->request_id.len = NGX_HTTP_IDV_REQUEST_ID_LEN;

    return b;
}


/*
 * A request's answer is one of these two; ngx_http_idv_send_answer()
 * renders it once every answer handler has seen it.
 */

ngx_int_t
ngx_http_idv_error(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_uint_t status, const char *code, const char *message)
{
    ngx_memzero(&ctx->answer, sizeof(ngx_http_idv_answer_t));

    ctx->answer.status = status;
    ctx->answer.message = message;
    ctx->answer.error = 1;

    ctx->code.data = (u_char *) code;
    ctx->code.len = ngx_strlen(code);

    return NGX_HTTP_IDV_ANSWER;
}


ngx_int_t
ngx_http_idv_reply(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_uint_t status, u_char *start, u_char *end, void *json)
{
    ngx_memzero(&ctx->answer, sizeof(ngx_http_idv_answer_t));

    ctx->answer.status = status;
    ctx->answer.start = start;
    ctx->answer.end = end;
    ctx->answer.json = json;

    return NGX_HTTP_IDV_ANSWER;
}


void *
ngx_http_idv_answer_json(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx)
{
    cJSON                  *root;
    ngx_pool_cleanup_t     *cln;
    ngx_http_idv_answer_t  *a;

    a = &ctx->answer;

    if (a->json || !a->upstream || a->error || a->start == NULL) {
        return a->json;
    }

    cln = ngx_pool_cleanup_add(r->pool, 0);
    if (cln == NULL) {
        return NULL;
    }

    /* the envelope scan accepted it: JSON that cJSON parses */

    root = cJSON_ParseWithLength((char *) a->start, a->end - a->start);
    if (root == NULL) {
        return NULL;
    }

    cln->handler = ngx_http_idv_json_cleanup;
    cln->data = root;

    a->json = root;

    return root;
}


static void
ngx_http_idv_json_cleanup(void *data)
{
    cJSON_Delete(data);
}


ngx_int_t
ngx_http_idv_send_answer(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx)
{
    ngx_buf_t              *b;
    ngx_chain_t             out;
    ngx_http_idv_answer_t  *a;

    a = &ctx->answer;

    if (a->error || a->start == NULL) {
        b = ngx_http_idv_error_buf(r, ctx,
                                   a->status ? a->status
                                             : NGX_HTTP_INTERNAL_SERVER_ERROR,
                                   (char *) (ctx->code.len ? ctx->code.data
                                             : (u_char *)
                                               "Gateway.InternalError"),
                                   a->message ? a->message
                                              : "The gateway could not "
                                                "process the request",
                                   a->service);
        if (b == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        out.buf = b;
        out.next = NULL;

        return ngx_http_idv_output(r, ctx, a->status, &out, b->last - b->pos);
    }

    if (a->upstream && ctx->conf->dialect == NGX_HTTP_IDV_DIALECT_SDK) {

        /* the service's status and bytes, which the SDK parses */

        b = ngx_calloc_buf(r->pool);
        if (b == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        b->start = a->start;
        b->pos = a->start;
        b->last = a->end;
        b->end = a->end;
        b->memory = 1;
        b->last_buf = 1;
        b->last_in_chain = 1;

        out.buf = b;
        out.next = NULL;

        return ngx_http_idv_output(r, ctx, ctx->upstream_status, &out,
                                   b->last - b->pos);
    }

    return ngx_http_idv_send_envelope(r, ctx, a->status,
                                      ctx->conf->expand_json
                                      ? ngx_http_idv_answer_json(r, ctx)
                                      : NULL,
                                      a->start, a->end);
}


static ngx_int_t
ngx_http_idv_send_envelope(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_uint_t status, void *json, u_char *start, u_char *end)
{
    u_char       *p, *gw, *printed;
    size_t        gw_len, len;
    cJSON        *root;
    ngx_buf_t    *b, *tail;
    ngx_chain_t   out[2];

    root = json;

    if (root && ctx->conf->expand_json) {
        ngx_http_idv_expand_json(root);

        printed = (u_char *) cJSON_PrintUnformatted(root);

        if (printed == NULL) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        len = ngx_strlen(printed);

        start = ngx_pnalloc(r->pool, len);
        if (start == NULL) {
            cJSON_free(printed);
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }

        ngx_memcpy(start, printed, len);
        cJSON_free(printed);

        end = start + len;
    }

    /* the envelope is a valid object: splice before its closing brace */

    p = end;

    while (p > start && p[-1] != '}') {
        p--;
    }

    if (p == start) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    end = p - 1;

    do {
        p--;
    } while (p > start && (p[-1] == ' ' || p[-1] == '\t' || p[-1] == '\r'
                           || p[-1] == '\n'));

    gw = ngx_http_idv_gateway_json(r, ctx, status, &gw_len);
    if (gw == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b = ngx_calloc_buf(r->pool);
    tail = ngx_create_temp_buf(r->pool, gw_len + 2);

    if (b == NULL || tail == NULL) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    b->start = start;
    b->pos = start;
    b->last = end;
    b->end = end;
    b->memory = 1;

    if (p[-1] != '{') {
        *tail->last++ = ',';
    }

    tail->last = ngx_cpymem(tail->last, gw, gw_len);
    *tail->last++ = '}';
    tail->last_buf = 1;
    tail->last_in_chain = 1;

    out[0].buf = b;
    out[0].next = &out[1];
    out[1].buf = tail;
    out[1].next = NULL;

    return ngx_http_idv_output(r, ctx, status, out,
                               (b->last - b->pos) + (tail->last - tail->pos));
}


static ngx_int_t
ngx_http_idv_output(ngx_http_request_t *r, ngx_http_idv_ctx_t *ctx,
    ngx_uint_t status, ngx_chain_t *out, off_t len)
{
    ngx_int_t   rc;
    ngx_str_t  *type;

    ctx->sent = 1;

    type = (ctx->conf->dialect == NGX_HTTP_IDV_DIALECT_SDK)
           ? &ngx_http_idv_sdk_json_type : &ngx_http_idv_json_type;

    r->headers_out.status = status;
    r->headers_out.content_type = *type;
    r->headers_out.content_type_len = type->len;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.content_length_n = len;

    rc = ngx_http_send_header(r);

    if (rc == NGX_ERROR || rc > NGX_OK || r->header_only) {
        return rc;
    }

    return ngx_http_output_filter(r, out);
}


/*
 * Ext* result fields are JSON encoded as strings: decode them in place.
 * A member that parses becomes raw JSON, its text as the service wrote
 * it: printing the parsed values would turn an integer above 2^53 into
 * 1.2345678901234567e+19 and 1e400 into null.
 */

static void
ngx_http_idv_expand_json(cJSON *root)
{
    cJSON  *result, *item, *parsed, *raw;

    result = cJSON_GetObjectItemCaseSensitive(root, "Result");

    if (!cJSON_IsObject(result)) {
        return;
    }

    for (item = result->child; item; item = item->next) {

        if (!cJSON_IsString(item) || item->string == NULL
            || ngx_strncmp(item->string, "Ext", 3) != 0)
        {
            continue;
        }

        /*
         * nothing after the value, no control bytes JSON rules out: the
         * text is spliced in as it is
         */

        if (ngx_http_idv_json_text_strict((u_char *) item->valuestring,
                                          ngx_strlen(item->valuestring))
            != 0)
        {
            continue;
        }

        parsed = cJSON_ParseWithOpts(item->valuestring, NULL, 1);

        if (parsed == NULL) {
            continue;
        }

        if (!cJSON_IsObject(parsed) && !cJSON_IsArray(parsed)) {
            cJSON_Delete(parsed);
            continue;
        }

        cJSON_Delete(parsed);

        raw = cJSON_CreateRaw(item->valuestring);

        if (raw == NULL) {
            continue;
        }

        /* the member's name moves to the replacement */

        raw->string = item->string;
        item->string = NULL;

        cJSON_ReplaceItemViaPointer(result, item, raw);
        item = raw;
    }
}


/* set a response header; an existing one is kept unless replace is set */

ngx_int_t
ngx_http_idv_set_header(ngx_http_request_t *r, const char *key,
    ngx_str_t *value, ngx_uint_t replace)
{
    size_t            len;
    ngx_uint_t        i;
    ngx_list_part_t  *part;
    ngx_table_elt_t  *h;

    len = ngx_strlen(key);

    part = &r->headers_out.headers.part;
    h = part->elts;

    for (i = 0; /* void */ ; i++) {

        if (i >= part->nelts) {
            if (part->next == NULL) {
                break;
            }

            part = part->next;
            h = part->elts;
            i = 0;
        }

        if (h[i].hash && h[i].key.len == len
            && ngx_strncasecmp(h[i].key.data, (u_char *) key, len) == 0)
        {
            if (replace) {
                h[i].value = *value;
            }

            return NGX_OK;
        }
    }

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }

    h->hash = 1;
    h->key.data = (u_char *) key;
    h->key.len = len;
    h->value = *value;

    return NGX_OK;
}


ngx_int_t
ngx_http_idv_filter_init(ngx_conf_t *cf)
{
    ngx_http_next_header_filter = ngx_http_top_header_filter;
    ngx_http_top_header_filter = ngx_http_idv_header_filter;

    ngx_http_next_body_filter = ngx_http_top_body_filter;
    ngx_http_top_body_filter = ngx_http_idv_body_filter;

    return NGX_OK;
}


/*
 * nginx's own error responses in an idv location (the body over
 * client_max_body_size is refused before the handler runs) are turned
 * into the same JSON envelope the backend gets everywhere else.
 */

static ngx_int_t
ngx_http_idv_header_filter(ngx_http_request_t *r)
{
    const char                 *code, *message;
    ngx_str_t                  *type;
    ngx_uint_t                  status, sdk;
    ngx_http_idv_ctx_t         *ctx;
    ngx_http_idv_loc_conf_t    *lcf;
    ngx_http_idv_error_page_t  *page;

    if (r != r->main || r->headers_out.status < NGX_HTTP_BAD_REQUEST) {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_get_module_ctx(r, ngx_http_idv_module);

    if (ctx && ctx->sent) {
        return ngx_http_next_header_filter(r);
    }

    lcf = ngx_http_get_module_loc_conf(r, ngx_http_idv_module);

    if (lcf->op == NULL && lcf->dialect != NGX_HTTP_IDV_DIALECT_SDK) {
        return ngx_http_next_header_filter(r);
    }

    ctx = ngx_http_idv_get_ctx(r);
    if (ctx == NULL) {
        return NGX_ERROR;
    }

    status = r->headers_out.status;
    sdk = (lcf->dialect == NGX_HTTP_IDV_DIALECT_SDK);

    for (page = ngx_http_idv_error_pages; page->status; page++) {
        if (page->status == status) {
            break;
        }
    }

    if (page->status) {
        code = sdk ? page->sdk_code : page->code;
        message = sdk ? page->sdk_message : page->message;

    } else if (sdk) {
        code = (status >= NGX_HTTP_INTERNAL_SERVER_ERROR)
               ? "InternalError" : "Gateway.Error";
        message = "The gateway could not process the request.";

    } else {
        code = (status >= NGX_HTTP_INTERNAL_SERVER_ERROR)
               ? "Gateway.InternalError" : "Gateway.Error";
        message = "The gateway could not process the request";
    }

    if (ctx->conf->op == NULL && !sdk) {
        return ngx_http_next_header_filter(r);
    }

    ctx->replacement = ngx_http_idv_error_buf(r, ctx, status, code, message,
                                              sdk);
    if (ctx->replacement == NULL) {
        return NGX_ERROR;
    }

    ctx->sent = 1;

    type = sdk ? &ngx_http_idv_sdk_json_type : &ngx_http_idv_json_type;

    r->headers_out.content_type = *type;
    r->headers_out.content_type_len = type->len;
    r->headers_out.content_type_lowcase = NULL;
    r->headers_out.content_length_n = ctx->replacement->last
                                      - ctx->replacement->pos;

    ngx_http_clear_accept_ranges(r);

    if (r->headers_out.content_length) {
        r->headers_out.content_length->hash = 0;
        r->headers_out.content_length = NULL;
    }

    return ngx_http_next_header_filter(r);
}


static ngx_int_t
ngx_http_idv_body_filter(ngx_http_request_t *r, ngx_chain_t *in)
{
    ngx_chain_t          *cl, out;
    ngx_http_idv_ctx_t   *ctx;

    ctx = ngx_http_get_module_ctx(r->main, ngx_http_idv_module);

    if (r != r->main) {
        if (ctx && ctx->sr == r) {
            return ngx_http_idv_upstream_capture(r, ctx, in);
        }

        return ngx_http_next_body_filter(r, in);
    }

    if (ctx == NULL || ctx->replacement == NULL) {
        return ngx_http_next_body_filter(r, in);
    }

    /* swallow nginx's error page */

    for (cl = in; cl; cl = cl->next) {
        cl->buf->pos = cl->buf->last;
        cl->buf->file_pos = cl->buf->file_last;
    }

    if (ctx->replaced) {
        return (in == NULL) ? ngx_http_next_body_filter(r, NULL) : NGX_OK;
    }

    ctx->replaced = 1;

    out.buf = ctx->replacement;
    out.next = NULL;

    return ngx_http_next_body_filter(r, &out);
}

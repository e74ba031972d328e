
/*
 * ngx_http_idv_module: what the nginx-side rooms share.
 */


#ifndef _NGX_HTTP_IDV_MODULE_H_INCLUDED_
#define _NGX_HTTP_IDV_MODULE_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include "ngx_http_idv_core.h"
#include "ngx_http_idv_ops.h"
#include "ngx_http_idv_request.h"


/* the pure core's strings share ngx_str_t's layout */
#define ngx_http_idv_ngx_str(s)        ((ngx_str_t *) (s))


#define NGX_HTTP_IDV_DEFAULT_ENDPOINT  "cloudauth-intl.cn-hongkong.aliyuncs.com"


typedef struct {
    ngx_str_t                   access_key_id;
    ngx_str_t                   access_key_secret;
    ngx_str_t                   credentials;    /* where they came from */

    ngx_str_t                   endpoint;
    ngx_str_t                   pass;
    ngx_uint_t                  signature;

    const ngx_http_idv_op_t    *op;
    ngx_str_t                   product;

    ngx_flag_t                  expand_json;
} ngx_http_idv_loc_conf_t;


/* Result.Passed: documented as Y/N, EkycVerify's model says T/F */
#define NGX_HTTP_IDV_PASSED_UNKNOWN  0
#define NGX_HTTP_IDV_PASSED_YES      1
#define NGX_HTTP_IDV_PASSED_NO       2


typedef struct {
    ngx_http_idv_loc_conf_t    *conf;
    ngx_http_idv_req_t          req;

    ngx_http_request_t         *sr;
    ngx_buf_t                  *response;
    ngx_uint_t                  upstream_status;
    ngx_msec_t                  start;
    ngx_msec_t                  upstream_time;
    ngx_uint_t                  attempts;

    /* what the logs and variables may show: no PII here */
    ngx_str_t                   code;
    ngx_str_t                   request_id;
    ngx_str_t                   transaction_id;
    ngx_str_t                   merchant_biz_id;

    ngx_http_log_handler_pt     log_handler;    /* nginx's, wrapped */
    ngx_buf_t                  *replacement;    /* for nginx's own errors */
    ngx_uint_t                  passed;         /* NGX_HTTP_IDV_PASSED_* */

    unsigned                    done:1;
    unsigned                    failed:1;
    unsigned                    responded:1;
    unsigned                    replaced:1;
    unsigned                    too_large:1;
} ngx_http_idv_ctx_t;


extern ngx_module_t  ngx_http_idv_module;


/* handler */
ngx_int_t ngx_http_idv_handler(ngx_http_request_t *r);
ngx_http_idv_ctx_t *ngx_http_idv_get_ctx(ngx_http_request_t *r);
void *ngx_http_idv_alloc(void *pool, size_t size);

/* upstream: sign and send the call as a subrequest */
ngx_int_t ngx_http_idv_upstream_call(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx);
ngx_int_t ngx_http_idv_upstream_capture(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_chain_t *in);
ngx_int_t ngx_http_idv_init_process_handler(ngx_cycle_t *cycle);
void ngx_http_idv_make_id(u_char *dst32);

/* envelope: answers in the API's JSON envelope */
ngx_int_t ngx_http_idv_send_error(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_uint_t status, const char *code,
    const char *message);
ngx_int_t ngx_http_idv_send_envelope(ngx_http_request_t *r,
    ngx_http_idv_ctx_t *ctx, ngx_uint_t status, void *json, u_char *start,
    u_char *end);
ngx_int_t ngx_http_idv_filter_init(ngx_conf_t *cf);


#endif /* _NGX_HTTP_IDV_MODULE_H_INCLUDED_ */

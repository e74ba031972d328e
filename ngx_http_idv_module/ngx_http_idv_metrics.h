
/*
 * ngx_http_idv_module: what the other rooms tell the metrics room.
 */


#ifndef _NGX_HTTP_IDV_METRICS_H_INCLUDED_
#define _NGX_HTTP_IDV_METRICS_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>


/* callback outcomes, idv_callbacks_total{outcome=...} */
#define NGX_HTTP_IDV_M_CB_VERIFIED       0
#define NGX_HTTP_IDV_M_CB_FORWARDED      1
#define NGX_HTTP_IDV_M_CB_KEPT           2
#define NGX_HTTP_IDV_M_CB_DUPLICATE      3
#define NGX_HTTP_IDV_M_CB_BACKEND_ERROR  4
#define NGX_HTTP_IDV_M_CB_MALFORMED      5
#define NGX_HTTP_IDV_M_CB_FORGED         6
#define NGX_HTTP_IDV_M_CB_EXPIRED        7
#define NGX_HTTP_IDV_M_CB_FOREIGN        8
#define NGX_HTTP_IDV_M_CB_UNCONFIRMED    9
#define NGX_HTTP_IDV_M_EVENTS            10


extern ngx_module_t  ngx_http_idv_metrics_module;


void ngx_http_idv_metrics_event(ngx_http_request_t *r, ngx_uint_t event);


#endif /* _NGX_HTTP_IDV_METRICS_H_INCLUDED_ */


/*
 * ngx_http_idv_module: what the other rooms ask the tenancy room.
 */


#ifndef _NGX_HTTP_IDV_TENANCY_H_INCLUDED_
#define _NGX_HTTP_IDV_TENANCY_H_INCLUDED_


#include <ngx_config.h>
#include <ngx_core.h>


/* idv_tenancy_zone is declared: ownership is kept, results may be */
ngx_uint_t ngx_http_idv_tenancy_configured(ngx_conf_t *cf);


#endif /* _NGX_HTTP_IDV_TENANCY_H_INCLUDED_ */


/*
 * ngx_http_idv_module: temporary credentials (idv_credentials_source).
 */


#ifndef _NGX_HTTP_IDV_CREDENTIALS_H_INCLUDED_
#define _NGX_HTTP_IDV_CREDENTIALS_H_INCLUDED_


#include "ngx_http_idv_module.h"


/* the directive, at http, server and location level */
char *ngx_http_idv_credentials_source(ngx_conf_t *cf, ngx_command_t *cmd,
    void *conf);

/*
 * At merge time, for a location that signs: the credentials it signs
 * with, from the configuration or the environment.  NGX_OK, or
 * NGX_ERROR after an [emerg]: "LOCATION<lack>: set ..." (every way to
 * give credentials named) when there are none at all.
 */
ngx_int_t ngx_http_idv_credentials_resolve(ngx_conf_t *cf,
    ngx_http_idv_loc_conf_t *conf, const char *lack);

/* assume_role: the one source signed with a long-lived key */
ngx_uint_t ngx_http_idv_credentials_assume(ngx_http_idv_creds_t *src);

/* postconfiguration: the PREPARE handler, if any level has a source */
ngx_int_t ngx_http_idv_credentials_init(ngx_conf_t *cf);

/* the metrics of every source: their room, and their lines */
size_t ngx_http_idv_credentials_metrics_size(void);
u_char *ngx_http_idv_credentials_metrics(u_char *p, u_char *end);


#endif /* _NGX_HTTP_IDV_CREDENTIALS_H_INCLUDED_ */

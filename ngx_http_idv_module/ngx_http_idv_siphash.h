
/*
 * ngx_http_idv_module: SipHash-2-4, a keyed hash of short inputs.
 *
 * Pure core (no nginx headers): the store keys its entries by the
 * 128-bit output under a random key per zone, so that nobody who does
 * not know the key can choose inputs that collide.
 */


#ifndef _NGX_HTTP_IDV_SIPHASH_H_INCLUDED_
#define _NGX_HTTP_IDV_SIPHASH_H_INCLUDED_


#include <sys/types.h>
#include <stddef.h>
#include <stdint.h>


#define NGX_HTTP_IDV_SIPHASH_KEY_LEN  16


/*
 * SipHash-2-4 of "len" bytes at "in" under a 16-byte key: "outlen" 8 is
 * the 64-bit function, 16 the 128-bit one (SipHash-2-4-128); the output
 * is written as the reference implementation writes it (little-endian)
 */
void ngx_http_idv_siphash(u_char *out, size_t outlen, const u_char *in,
    size_t len, const u_char *key);


#endif /* _NGX_HTTP_IDV_SIPHASH_H_INCLUDED_ */


/*
 * libFuzzer target: the JSON body mapper, ngx_http_idv_req_parse_json(),
 * then validation and signing of what it accepts (fuzz_request.h).
 *
 * Input: "Action[ ProductCode]\n{...JSON body...}"
 */


#include "fuzz_request.h"


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    return fuzz_request(data, size, ngx_http_idv_req_parse_json, 1);
}

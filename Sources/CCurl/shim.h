#ifndef CORRAL_CCURL_SHIM_H
#define CORRAL_CCURL_SHIM_H

// Typed wrappers for libcurl's variadic calls, which Swift cannot call directly.
// One wrapper per argument type: the option's documented type picks the wrapper.
#include <curl/curl.h>

typedef size_t (*corral_curl_data_callback)(char *buffer, size_t size, size_t count, void *userdata);
typedef int (*corral_curl_xferinfo_callback)(void *userdata, curl_off_t dltotal, curl_off_t dlnow,
                                             curl_off_t ultotal, curl_off_t ulnow);

static inline CURLcode corral_curl_setopt_long(CURL *handle, CURLoption option, long value) {
    return curl_easy_setopt(handle, option, value);
}
static inline CURLcode corral_curl_setopt_offset(CURL *handle, CURLoption option, curl_off_t value) {
    return curl_easy_setopt(handle, option, value);
}
static inline CURLcode corral_curl_setopt_string(CURL *handle, CURLoption option, const char *value) {
    return curl_easy_setopt(handle, option, value);
}
static inline CURLcode corral_curl_setopt_pointer(CURL *handle, CURLoption option, void *value) {
    return curl_easy_setopt(handle, option, value);
}
static inline CURLcode corral_curl_setopt_slist(CURL *handle, CURLoption option, struct curl_slist *value) {
    return curl_easy_setopt(handle, option, value);
}
static inline CURLcode corral_curl_setopt_data_callback(CURL *handle, CURLoption option,
                                                        corral_curl_data_callback value) {
    return curl_easy_setopt(handle, option, value);
}
static inline CURLcode corral_curl_setopt_xferinfo_callback(CURL *handle, corral_curl_xferinfo_callback value) {
    return curl_easy_setopt(handle, CURLOPT_XFERINFOFUNCTION, value);
}
static inline CURLcode corral_curl_getinfo_long(CURL *handle, CURLINFO info, long *value) {
    return curl_easy_getinfo(handle, info, value);
}
static inline CURLcode corral_curl_getinfo_pointer(CURL *handle, CURLINFO info, void **value) {
    return curl_easy_getinfo(handle, info, value);
}
static inline CURLMcode corral_curl_multi_setopt_long(CURLM *multi, CURLMoption option, long value) {
    return curl_multi_setopt(multi, option, value);
}

// Macros Swift does not import (they are expressions, not literals).
static const int corral_CURLPAUSE_CONT = CURLPAUSE_CONT;
static const size_t corral_CURL_WRITEFUNC_PAUSE = CURL_WRITEFUNC_PAUSE;
static const size_t corral_CURL_READFUNC_PAUSE = CURL_READFUNC_PAUSE;
static const size_t corral_CURL_READFUNC_ABORT = CURL_READFUNC_ABORT;
static const long corral_CURL_GLOBAL_ALL = CURL_GLOBAL_ALL;

#endif

#ifndef CORRAL_CCURL_H
#define CORRAL_CCURL_H

// libcurl, loaded when first needed rather than when the process starts.
//
// Linking libcurl costs every process about 5 ms before main: libcurl pulls in some forty
// shared libraries (TLS, Kerberos, LDAP, IDN, ...) that the dynamic loader maps and
// relocates. Most `corral` commands never use it (they talk to the local service over a unix
// socket, or print their version), so corral opens it with dlopen on first use instead, and
// calls it through the table below. The header still comes from libcurl's, for its types and
// constants; calling a `curl_*` function directly does not link.
//
// Also: typed wrappers for libcurl's variadic calls, which Swift cannot call directly. One
// wrapper per argument type: the option's documented type picks the wrapper.
#include <curl/curl.h>
#include <stddef.h>

typedef size_t (*corral_curl_data_callback)(char *buffer, size_t size, size_t count, void *userdata);
typedef int (*corral_curl_xferinfo_callback)(void *userdata, curl_off_t dltotal, curl_off_t dlnow,
                                             curl_off_t ultotal, curl_off_t ulnow);

/// Opens libcurl and initialises it (curl_global_init), once per process; later calls return
/// the first outcome. 0 on success; otherwise fills `error` with why and returns -1.
int corral_curl_load(char *error, size_t capacity);

CURL *corral_curl_easy_init(void);
void corral_curl_easy_cleanup(CURL *handle);
CURLcode corral_curl_easy_pause(CURL *handle, int bitmask);
const char *corral_curl_easy_strerror(CURLcode code);

CURLcode corral_curl_setopt_long(CURL *handle, CURLoption option, long value);
CURLcode corral_curl_setopt_offset(CURL *handle, CURLoption option, curl_off_t value);
CURLcode corral_curl_setopt_string(CURL *handle, CURLoption option, const char *value);
CURLcode corral_curl_setopt_pointer(CURL *handle, CURLoption option, void *value);
CURLcode corral_curl_setopt_slist(CURL *handle, CURLoption option, struct curl_slist *value);
CURLcode corral_curl_setopt_data_callback(CURL *handle, CURLoption option, corral_curl_data_callback value);
CURLcode corral_curl_setopt_xferinfo_callback(CURL *handle, corral_curl_xferinfo_callback value);
CURLcode corral_curl_getinfo_long(CURL *handle, CURLINFO info, long *value);
CURLcode corral_curl_getinfo_pointer(CURL *handle, CURLINFO info, void **value);

CURLM *corral_curl_multi_init(void);
CURLMcode corral_curl_multi_cleanup(CURLM *multi);
CURLMcode corral_curl_multi_add_handle(CURLM *multi, CURL *handle);
CURLMcode corral_curl_multi_remove_handle(CURLM *multi, CURL *handle);
CURLMcode corral_curl_multi_perform(CURLM *multi, int *running);
CURLMcode corral_curl_multi_poll(CURLM *multi, struct curl_waitfd *extra, unsigned int count, int timeout,
                                 int *ready);
CURLMcode corral_curl_multi_wakeup(CURLM *multi);
CURLMsg *corral_curl_multi_info_read(CURLM *multi, int *remaining);
CURLMcode corral_curl_multi_setopt_long(CURLM *multi, CURLMoption option, long value);

struct curl_slist *corral_curl_slist_append(struct curl_slist *list, const char *text);
void corral_curl_slist_free_all(struct curl_slist *list);

// Macros Swift does not import (they are expressions, not literals).
static const int corral_CURLPAUSE_CONT = CURLPAUSE_CONT;
static const size_t corral_CURL_WRITEFUNC_PAUSE = CURL_WRITEFUNC_PAUSE;
static const size_t corral_CURL_READFUNC_PAUSE = CURL_READFUNC_PAUSE;
static const size_t corral_CURL_READFUNC_ABORT = CURL_READFUNC_ABORT;
static const long corral_CURL_GLOBAL_ALL = CURL_GLOBAL_ALL;

#endif

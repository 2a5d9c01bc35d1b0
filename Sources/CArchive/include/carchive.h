#ifndef CORRAL_CARCHIVE_H
#define CORRAL_CARCHIVE_H

// libarchive, loaded when first needed rather than when the process starts.
//
// Linking libarchive costs every process about 2 ms before main: it pulls in libxml2, ICU,
// nettle and five compressors, which the dynamic loader maps and relocates. Most `corral`
// commands never make a tar (they print their version, or ask the local service), so corral
// opens it with dlopen on first use, as it does libcurl, and calls it through the table in
// carchive.c. The headers still come from libarchive's, for its types and constants; calling
// an `archive_*` function directly does not link.
#include <archive.h>
#include <archive_entry.h>
#include <locale.h>
#include <stddef.h>
#include <sys/stat.h>

/// Opens libarchive, once per process; later calls return the first outcome. 0 on success;
/// otherwise fills `error` with why and returns -1. Call it before any other function here.
int corral_archive_load(char *error, size_t capacity);

void corral_archive_entry_copy_hardlink(struct archive_entry *e, const char *v);
void corral_archive_entry_copy_pathname(struct archive_entry *e, const char *v);
void corral_archive_entry_copy_symlink(struct archive_entry *e, const char *v);
__LA_MODE_T corral_archive_entry_filetype(struct archive_entry *e);
void corral_archive_entry_free(struct archive_entry *e);
la_int64_t corral_archive_entry_gid(struct archive_entry *e);
const char *corral_archive_entry_hardlink(struct archive_entry *e);
time_t corral_archive_entry_mtime(struct archive_entry *e);
long corral_archive_entry_mtime_nsec(struct archive_entry *e);
struct archive_entry *corral_archive_entry_new(void);
const char *corral_archive_entry_pathname(struct archive_entry *e);
__LA_MODE_T corral_archive_entry_perm(struct archive_entry *e);
void corral_archive_entry_set_filetype(struct archive_entry *e, unsigned int v);
void corral_archive_entry_set_gid(struct archive_entry *e, la_int64_t v);
void corral_archive_entry_set_mtime(struct archive_entry *e, time_t s, long ns);
void corral_archive_entry_set_perm(struct archive_entry *e, __LA_MODE_T v);
void corral_archive_entry_set_size(struct archive_entry *e, la_int64_t v);
void corral_archive_entry_set_uid(struct archive_entry *e, la_int64_t v);
la_int64_t corral_archive_entry_size(struct archive_entry *e);
const char *corral_archive_entry_symlink(struct archive_entry *e);
la_int64_t corral_archive_entry_uid(struct archive_entry *e);
const char *corral_archive_error_string(struct archive *a);
la_ssize_t corral_archive_read_data(struct archive *a, void *buffer, size_t size);
int corral_archive_read_data_skip(struct archive *a);
int corral_archive_read_free(struct archive *a);
struct archive *corral_archive_read_new(void);
int corral_archive_read_next_header(struct archive *a, struct archive_entry **e);
int corral_archive_read_open(struct archive *a, void *client, archive_open_callback *on_open, archive_read_callback *on_read, archive_close_callback *on_close);
int corral_archive_read_support_format_empty(struct archive *a);
int corral_archive_read_support_format_tar(struct archive *a);
int corral_archive_write_close(struct archive *a);
la_ssize_t corral_archive_write_data(struct archive *a, const void *buffer, size_t size);
int corral_archive_write_fail(struct archive *a);
int corral_archive_write_finish_entry(struct archive *a);
int corral_archive_write_free(struct archive *a);
int corral_archive_write_header(struct archive *a, struct archive_entry *e);
struct archive *corral_archive_write_new(void);
int corral_archive_write_open2(struct archive *a, void *client, archive_open_callback *on_open, archive_write_callback *on_write, archive_close_callback *on_close, archive_free_callback *on_free);
int corral_archive_write_set_format_pax_restricted(struct archive *a);
int corral_archive_write_set_format_ustar(struct archive *a);

/// archive_set_error with a fixed message: the real one is printf-style and variadic, which
/// Swift cannot call. Callbacks hand libarchive a message, never a format built from input.
void corral_archive_set_error(struct archive *a, int error_number, const char *message);

// libarchive converts names through the calling thread's LC_CTYPE. A Swift process runs in
// the "C" locale, where non-ASCII names fail to convert (and libarchive 3.6's pax writer
// crashes on a UTF-8-only name). TarArchive switches the calling thread, and only it, to a
// UTF-8 locale around libarchive calls with uselocale(3). NULL when no UTF-8 locale exists.
static inline locale_t corral_archive_new_utf8_locale(void) {
    locale_t locale = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
    if (locale == (locale_t)0) locale = newlocale(LC_CTYPE_MASK, "en_US.UTF-8", (locale_t)0);
    return locale;
}

// UTIME_OMIT is a cast expression that Swift does not import: it tells utimensat(2) to leave
// a time alone.
static inline long corral_utime_omit(void) {
    return UTIME_OMIT;
}
#endif

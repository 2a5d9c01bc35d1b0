#ifndef CORRAL_CARCHIVE_SHIM_H
#define CORRAL_CARCHIVE_SHIM_H
#include <archive.h>
#include <archive_entry.h>
#include <locale.h>
#include <sys/stat.h>

// archive_set_error is printf-style and variadic, which Swift cannot call. Callbacks use
// this to hand libarchive a fixed message (never a format string built from input).
static inline void corral_archive_set_error(struct archive *a, int error_number, const char *message) {
    archive_set_error(a, error_number, "%s", message);
}

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

#ifndef CORRAL_CARCHIVE_SHIM_H
#define CORRAL_CARCHIVE_SHIM_H
#include <archive.h>
#include <archive_entry.h>
#endif

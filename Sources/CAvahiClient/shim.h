/* CAvahiClient: avahi-client 0.8 over D-Bus (mDNS publish, browse, resolve). */
#ifndef GQUIC_CAVAHICLIENT_SHIM_H
#define GQUIC_CAVAHICLIENT_SHIM_H
#include <avahi-client/client.h>
#include <avahi-client/lookup.h>
#include <avahi-client/publish.h>
#include <avahi-common/simple-watch.h>
#include <avahi-common/thread-watch.h>
#include <avahi-common/error.h>
#include <avahi-common/strlst.h>
#include <avahi-common/malloc.h>
#include <avahi-common/address.h>
#include <avahi-common/alternative.h>
#endif

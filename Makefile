# Build and install libnamesock.so (the LD_PRELOAD interposer and the native C API), its header
# and its pkg-config file.
#
#   make                                  # cargo build --release -p namesock-preload
#   make install PREFIX=$HOME/.local      # default PREFIX=/usr/local
#   cc app.c $(pkg-config --cflags --libs namesock)
#
# With a PREFIX outside the linker's search path, point PKG_CONFIG_PATH at $(PREFIX)/lib/pkgconfig
# and LD_LIBRARY_PATH at $(PREFIX)/lib (or link with -Wl,-rpath,$(PREFIX)/lib).
# PROFILE=debug installs target/debug/libnamesock.so instead of the release build.

PREFIX ?= /usr/local
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
DESTDIR ?=
PROFILE ?= release
CARGO ?= cargo
INSTALL ?= install
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)

ifeq ($(PROFILE),debug)
CARGO_PROFILE_FLAG :=
else
CARGO_PROFILE_FLAG := --profile $(PROFILE)
endif
LIBRARY := target/$(PROFILE)/libnamesock.so

all: $(LIBRARY)

$(LIBRARY): FORCE
	$(CARGO) build $(CARGO_PROFILE_FLAG) -p namesock-preload

target/namesock.pc: c-headers/namesock.pc.in FORCE
	mkdir -p target
	sed -e 's|@PREFIX@|$(PREFIX)|' -e 's|@LIBDIR@|$(LIBDIR)|' \
	    -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|' -e 's|@VERSION@|$(VERSION)|' $< > target/namesock.pc

install: $(LIBRARY) target/namesock.pc
	$(INSTALL) -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR)
	$(INSTALL) -m 755 $(LIBRARY) $(DESTDIR)$(LIBDIR)/libnamesock.so
	$(INSTALL) -m 644 c-headers/namesock.h $(DESTDIR)$(INCLUDEDIR)/namesock.h
	$(INSTALL) -m 644 target/namesock.pc $(DESTDIR)$(PKGCONFIGDIR)/namesock.pc

uninstall:
	rm -f $(DESTDIR)$(LIBDIR)/libnamesock.so $(DESTDIR)$(INCLUDEDIR)/namesock.h \
	      $(DESTDIR)$(PKGCONFIGDIR)/namesock.pc

examples: $(LIBRARY)
	$(MAKE) -C examples-c LIBDIR=$(CURDIR)/target/$(PROFILE)

.PHONY: all install uninstall examples FORCE
FORCE:

#!/usr/bin/env bash
# Debian packages the test suite uses: Chromium (browser tests), poppler-utils (PDF checks),
# fonts-wqy-microhei (an embeddable CJK TrueType font), rsyslog and rsyslog-gnutls (the SIEM
# stream's tests start a real rsyslogd, over TCP and TLS), slapd and ldap-utils (the directory tests
# start a real OpenLDAP; its package's own database is not used). Installs only what is missing.
set -euo pipefail
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v pdftoppm >/dev/null 2>&1 || missing+=(poppler-utils)
[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || missing+=(fonts-wqy-microhei)
command -v rsyslogd >/dev/null 2>&1 || [ -x /usr/sbin/rsyslogd ] || missing+=(rsyslog)
compgen -G "/usr/lib/*/rsyslog/lmnsd_gtls.so" >/dev/null || compgen -G "/usr/lib/rsyslog/lmnsd_gtls.so" >/dev/null \
  || missing+=(rsyslog-gnutls)
[ -x /usr/sbin/slapd ] || missing+=(slapd)
command -v ldapsearch >/dev/null 2>&1 || missing+=(ldap-utils)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
  echo "note: missing ${missing[*]}; install them (Debian: apt-get install ${missing[*]}) or the tests that need them are skipped" >&2
  exit 0
fi
echo "installing ${missing[*]} ..."
export DEBIAN_FRONTEND=noninteractive
echo "slapd slapd/no_configuration boolean true" | debconf-set-selections 2>/dev/null || true
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

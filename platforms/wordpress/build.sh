#!/usr/bin/env bash
# Builds a WordPress platform from Debian's packages (wordpress, its themes and wordpress-l10n):
#   platforms/wordpress/build.sh <platform root> [<source, default /usr/share/wordpress>]
# The result is self-contained (Debian's symbolic links are followed):
#   <root>/wordpress/   the codebase, with the control plane's wp-config.php and mu-plugin
#   <root>/bin/         the driver's site actions (hosting-wp.php)
#   <root>/sites/       one directory per site: settings.php, files/ (uploads)
# Running it again on an existing root refreshes the codebase and keeps the sites.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=${1:?usage: build.sh <platform root> [<wordpress source>]}
src=${2:-/usr/share/wordpress}
[ -f "$src/wp-includes/version.php" ] || { echo "error: no WordPress in $src (apt-get install wordpress)" >&2; exit 1; }
mkdir -p "$root/sites" "$root/bin"
rm -rf "$root/wordpress.new"
cp -rL "$src" "$root/wordpress.new"
cp "$here/wp-config.php" "$root/wordpress.new/wp-config.php"
mkdir -p "$root/wordpress.new/wp-content/mu-plugins"
cp "$here/mu-plugins/hosting.php" "$root/wordpress.new/wp-content/mu-plugins/hosting.php"
rm -f "$root/wordpress.new/wp-config-sample.php"
rm -rf "$root/wordpress.old"
[ -d "$root/wordpress" ] && mv "$root/wordpress" "$root/wordpress.old"
mv "$root/wordpress.new" "$root/wordpress"
rm -rf "$root/wordpress.old"
cp "$here/bin/hosting-wp.php" "$root/bin/hosting-wp.php"
echo "WordPress platform ready in $root"

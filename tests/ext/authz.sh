#!/bin/sh
# An ext_authz program for the tests: stdin is docker_auth's AuthRequestInfo JSON; the
# account picks the answer. $1 is a folder where each request is recorded.
dir=$1
input=$(cat)
printf '%s\n' "$input" >> "$dir/authz.in"
case "$input" in
    *'"Account":"grant"'*) exit 0 ;;
    *'"Account":"two"'*) exit 2 ;;
    *'"Account":"wait"'*) exec sleep 300 ;;
esac
exit 1

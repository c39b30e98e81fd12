#!/bin/sh
# An ext_auth program for the tests: stdin is "USER PASSWORD" (no newline). The user
# name picks the behaviour; $1 is a folder where each call is recorded.
dir=$1
input=$(cat; echo .)
input=${input%.}
user=${input%% *}
pass=${input#* }
echo "$user" >> "$dir/calls"
env > "$dir/env.$$"
echo "$0 $*" > "$dir/argv.$$"
case "$user" in
    ok)
        # The password exactly as typed: spaces and a newline inside.
        [ "$pass" = "$(printf 'p w\nx y')" ] || exit 1
        echo '{"labels": {"group": ["devs"]}}'
        exit 0 ;;
    plain) exit 0 ;;
    deny) exit 1 ;;
    nomatch) exit 2 ;;
    boom) echo "cannot check the password $pass" >&2; exit 3 ;;
    garbage) echo 'this is not json'; exit 0 ;;
    hang)
        echo $$ > "$dir/hang.pid"
        sleep 300 &
        echo $! > "$dir/hang-child.pid"
        wait
        exit 0 ;;
    busy*)
        # How many run at once: a marker per running call, counted on arrival.
        touch "$dir/running.$$"
        ls "$dir" | grep -c '^running\.' >> "$dir/concurrent"
        sleep 1
        rm -f "$dir/running.$$"
        exit 0 ;;
esac
exit 2

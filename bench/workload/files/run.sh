#!/bin/sh
# stand-in service script of the bench workload (never run by the bench)
set -eu
echo "bench service $*"
exit 0

#!/bin/sh
echo "coverage reports are not available in dcpp's offline build" >&2
exit 1

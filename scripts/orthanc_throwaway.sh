#!/usr/bin/env bash
# A throwaway Orthanc PACS (with its DICOMweb plugin) for the DICOM node tests, in a folder of
# its own, reachable from this machine only.
#   orthanc_throwaway.sh ensure                     install Debian's orthanc, orthanc-dicomweb and
#                                                   dicom3tools when missing (needs root + apt)
#   orthanc_throwaway.sh start DIR HTTP_PORT DICOM_PORT
#                                                   write DIR/orthanc.json and start Orthanc; runs
#                                                   DIR/route.lua when present; prints its base URL
#   orthanc_throwaway.sh stop DIR                   stop it; DIR is then free to delete
# HTTP (REST, DICOMweb): no authentication, remote access refused. DICOM: only the node's AE title
# CXRREVIEW calling from 127.0.0.1 may store. Never point it at a shared folder.
set -euo pipefail

PLUGIN_DIRS="/usr/share/orthanc/plugins /usr/lib/orthanc"

dicomweb_plugin() {
  local dir
  for dir in $PLUGIN_DIRS; do
    for lib in "$dir"/libOrthancDicomWeb.so*; do
      [ -f "$lib" ] && { echo "$lib"; return 0; }
    done
  done
  return 1
}

case "${1:-}" in
  ensure)
    if command -v Orthanc >/dev/null && dicomweb_plugin >/dev/null && command -v dciodvfy >/dev/null; then
      exit 0
    fi
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
      echo "installing orthanc, orthanc-dicomweb and dicom3tools for the DICOM node tests (apt-get)..."
      (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        orthanc orthanc-dicomweb dicom3tools >/dev/null) \
        || echo "warning: Orthanc could not be installed; its tests will say so"
    else
      echo "note: Orthanc is missing and apt-get is not usable; its tests will say so"
    fi
    exit 0 ;;
  start)
    dir=${2:?DIR}; http=${3:?HTTP_PORT}; dicom=${4:?DICOM_PORT}
    command -v Orthanc >/dev/null || { echo "the Orthanc server is not installed" >&2; exit 3; }
    plugin=$(dicomweb_plugin) || { echo "the Orthanc DICOMweb plugin is not installed" >&2; exit 3; }
    mkdir -p "$dir/storage"
    lua=""
    [ -f "$dir/route.lua" ] && lua="\"$dir/route.lua\""
    cat >"$dir/orthanc.json" <<EOF
{
  "Name": "cxr-test-pacs",
  "StorageDirectory": "$dir/storage",
  "IndexDirectory": "$dir/storage",
  "HttpPort": $http,
  "DicomPort": $dicom,
  "DicomAet": "ORTHANC",
  "RemoteAccessAllowed": false,
  "AuthenticationEnabled": false,
  "DicomAlwaysAllowStore": false,
  "DicomCheckModalityHost": true,
  "DicomModalities": {"cxrreview": ["CXRREVIEW", "127.0.0.1", 11112]},
  "DicomScuTimeout": 5,
  "DicomAssociationCloseDelay": 0,
  "JobsHistorySize": 1000,
  "ConcurrentJobs": 2,
  "LuaScripts": [$lua],
  "Plugins": ["$plugin"],
  "DicomWeb": {"Enable": true, "Root": "/dicom-web/", "StudiesMetadata": "Full"}
}
EOF
    nohup Orthanc "$dir/orthanc.json" >"$dir/server.log" 2>&1 &
    echo $! >"$dir/orthanc.pid"
    for _ in $(seq 1 150); do
      if (exec 3<>"/dev/tcp/127.0.0.1/$http") 2>/dev/null && (exec 3<>"/dev/tcp/127.0.0.1/$dicom") 2>/dev/null; then
        echo "http://127.0.0.1:$http"; exit 0
      fi
      kill -0 "$(cat "$dir/orthanc.pid")" 2>/dev/null || { tail -20 "$dir/server.log" >&2; exit 5; }
      sleep 0.2
    done
    tail -20 "$dir/server.log" >&2; exit 5 ;;
  stop)
    dir=${2:?DIR}
    [ -f "$dir/orthanc.pid" ] || exit 0
    pid=$(cat "$dir/orthanc.pid")
    kill "$pid" 2>/dev/null || exit 0
    for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || exit 0; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    exit 0 ;;
  *)
    echo "usage: $0 ensure | start DIR HTTP_PORT DICOM_PORT | stop DIR" >&2; exit 2 ;;
esac

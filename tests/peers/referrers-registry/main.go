// A registry that serves the OCI 1.1 referrers API, for privateer's tests: the registry of
// go-containerregistry with its referrers support switched on, blobs on disk, manifests in
// memory. Debian's distribution 2.8 (and distribution v3.1) have no referrers API.
// One addition: a finished blob upload answers with the blob's Location, as the distribution
// spec says it should (go-containerregistry leaves it out; oci-client, which the tests push
// with, requires it).
package main

import (
	"flag"
	"io"
	"log"
	"net"
	"net/http"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/registry"
)

func main() {
	address := flag.String("address", "127.0.0.1:5000", "host:port to listen on")
	blobs := flag.String("blobs", "", "directory for blobs (default: in memory)")
	flag.Parse()

	handler := registry.NewInMemoryBlobHandler()
	if *blobs != "" {
		handler = registry.NewDiskBlobHandler(*blobs)
	}
	listener, err := net.Listen("tcp", *address)
	if err != nil {
		log.Fatalln(err)
	}
	server := &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		Handler: withBlobLocation(registry.New(
			registry.WithBlobHandler(handler),
			registry.WithReferrersSupport(true),
			registry.Logger(log.New(io.Discard, "", 0)),
		)),
	}
	log.Printf("serving on %s", listener.Addr())
	log.Fatalln(server.Serve(listener))
}

// withBlobLocation sets Location: /v2/<name>/blobs/<digest> on the answer to the PUT that
// finishes a blob upload.
func withBlobLocation(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		name, _, isUpload := strings.Cut(strings.TrimPrefix(r.URL.Path, "/v2/"), "/blobs/uploads")
		digest := r.URL.Query().Get("digest")
		if r.Method == http.MethodPut && isUpload && digest != "" {
			w.Header().Set("Location", "/v2/"+name+"/blobs/"+digest)
		}
		next.ServeHTTP(w, r)
	})
}

package main

import (
	"io"
	"net/http"
	"strings"
	"time"
)

// Datastore file transfer (/folder) as a datastore under load serves it: at most
// --folder-mib-per-second MiB/s per transfer, both ways. Tests use it to hold a backup in the
// middle of copying a disk (to kill its worker there); the simulator itself serves /folder as
// fast as the machine allows.

// throttleFolder wraps the server's handler; rate is bytes per second, 0 for no limit.
func throttleFolder(next http.Handler, rate float64) http.Handler {
	if rate <= 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !strings.HasPrefix(r.URL.Path, "/folder/") {
			next.ServeHTTP(w, r)
			return
		}
		if r.Body != nil {
			r.Body = &slowReader{ReadCloser: r.Body, pace: pace{rate: rate, start: time.Now()}}
		}
		next.ServeHTTP(&slowWriter{ResponseWriter: w, pace: pace{rate: rate, start: time.Now()}}, r)
	})
}

type pace struct {
	rate  float64
	start time.Time
	bytes int64
}

// after n more bytes, wait until the average rate is back under the limit.
func (p *pace) after(n int) {
	p.bytes += int64(n)
	due := p.start.Add(time.Duration(float64(p.bytes) / p.rate * float64(time.Second)))
	if wait := time.Until(due); wait > 0 {
		time.Sleep(wait)
	}
}

type slowWriter struct {
	http.ResponseWriter
	pace pace
}

func (w *slowWriter) Write(b []byte) (int, error) {
	written := 0
	for len(b) > 0 {
		n := len(b)
		if n > 64*1024 {
			n = 64 * 1024
		}
		m, err := w.ResponseWriter.Write(b[:n])
		written += m
		w.pace.after(m)
		if err != nil {
			return written, err
		}
		b = b[n:]
	}
	return written, nil
}

type slowReader struct {
	io.ReadCloser
	pace pace
}

func (r *slowReader) Read(b []byte) (int, error) {
	if len(b) > 64*1024 {
		b = b[:64*1024]
	}
	n, err := r.ReadCloser.Read(b)
	r.pace.after(n)
	return n, err
}

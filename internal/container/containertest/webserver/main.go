// Command webserver stands in for Jenkins in the container tests: it answers
// HTTP, leaves traces in a mounted directory, reacts to SIGTERM the way a test
// asks it to, and exits 3 on SIGUSR1, as a crash would end Jenkins.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", ":8080", "listen address")
	dir := flag.String("dir", "/data", "directory for trace files")
	termDelay := flag.Duration("term-delay", 0, "work done between SIGTERM and a clean exit")
	ignoreTerm := flag.Bool("ignore-term", false, "ignore SIGTERM, so only SIGKILL ends the process")
	flag.Parse()

	// Signal handling is set up before the start is recorded, so a test that
	// saw the start knows SIGTERM will be handled as asked.
	sigs := make(chan os.Signal, 1)
	if *ignoreTerm {
		signal.Ignore(syscall.SIGTERM)
	} else {
		signal.Notify(sigs, syscall.SIGTERM, syscall.SIGINT)
	}
	crash := make(chan os.Signal, 1)
	signal.Notify(crash, syscall.SIGUSR1)
	go func() {
		<-crash
		os.Exit(3)
	}()
	appendLine(filepath.Join(*dir, "starts"), strconv.FormatInt(time.Now().UnixNano(), 10))

	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, _ *http.Request) {
		msg := os.Getenv("GREETING")
		if msg == "" {
			msg = "ok"
		}
		fmt.Fprint(w, msg)
	})
	// /proc/self/status shows what the container allows: NoNewPrivs, CapEff, CapBnd.
	mux.HandleFunc("/status", func(w http.ResponseWriter, _ *http.Request) {
		b, err := os.ReadFile("/proc/self/status")
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Write(b) //nolint:errcheck // the test reads what arrives.
	})
	mux.HandleFunc("/env", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, os.Getenv(r.URL.Query().Get("name")))
	})
	mux.HandleFunc("/exit", func(w http.ResponseWriter, r *http.Request) {
		code, err := strconv.Atoi(r.URL.Query().Get("code"))
		if err != nil {
			http.Error(w, "code must be an integer", http.StatusBadRequest)
			return
		}
		fmt.Fprintln(w, "exiting", code)
		if f, ok := w.(http.Flusher); ok {
			f.Flush()
		}
		go func() {
			time.Sleep(50 * time.Millisecond)
			os.Exit(code)
		}()
	})
	srv := &http.Server{Addr: *addr, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && err != http.ErrServerClosed {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
	}()

	if *ignoreTerm {
		select {}
	}
	<-sigs
	appendLine(filepath.Join(*dir, "term"), "term")
	time.Sleep(*termDelay)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	_ = srv.Shutdown(ctx)
	appendLine(filepath.Join(*dir, "clean"), "clean")
	os.Exit(0)
}

func appendLine(path, line string) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return
	}
	defer f.Close()
	fmt.Fprintln(f, line)
}

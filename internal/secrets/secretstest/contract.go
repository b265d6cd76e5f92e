package secretstest

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jenkins-spot-agent/jenkins-spot-agent/internal/secrets"
)

// Store is one kind of secret store as the contract drives it: how to put a value,
// refuse access, and make a Source for a name.
type Store struct {
	// Name is the store's name in test output.
	Name string
	// Target is the X-Amz-Target its reads arrive as.
	Target string
	// Put creates the secret name with value, or rotates it to value.
	Put func(name, value string)
	// UseCustomerKey encrypts name with a customer managed key the role may not use.
	UseCustomerKey func(name string)
	// Source returns the Source under test for name.
	Source func(t *testing.T, name string) secrets.Source
}

// RunContract runs the behaviour every secrets.Source promises against store, backed
// by srv: the value read back exactly, a rotation seen at the next read, each kind of
// failure wrapped in its sentinel with a fix that names the grant or the key to set,
// a deadline kept while the service hangs, and no value in any error or name.
func RunContract(t *testing.T, srv *Server, store Store) {
	const token = "11d0e9b3a2c44f5e8f7a6b5c4d3e2f1a0b"
	t.Run("reads the value", func(t *testing.T) {
		store.Put("jenkins-read", token)
		got, err := read(t, store.Source(t, "jenkins-read"))
		if err != nil || got != token {
			t.Fatalf("Read = %q, %v; want the stored token", got, err)
		}
	})
	t.Run("trims a trailing newline", func(t *testing.T) {
		store.Put("jenkins-newline", token+"\n")
		if got, err := read(t, store.Source(t, "jenkins-newline")); err != nil || got != token {
			t.Fatalf("Read = %q, %v; want the token without the newline", got, err)
		}
	})
	t.Run("sees a rotation at the next read", func(t *testing.T) {
		store.Put("jenkins-rotated", "old-token-0001")
		src := store.Source(t, "jenkins-rotated")
		if got, _ := read(t, src); got != "old-token-0001" {
			t.Fatalf("first Read = %q", got)
		}
		store.Put("jenkins-rotated", "new-token-0002")
		if got, err := read(t, src); err != nil || got != "new-token-0002" {
			t.Fatalf("Read after rotation = %q, %v; want the new token", got, err)
		}
	})
	t.Run("missing is ErrNotFound", func(t *testing.T) {
		_, err := read(t, store.Source(t, "jenkins-missing"))
		wantErr(t, err, secrets.ErrNotFound, "jenkins-missing", "create it")
	})
	t.Run("empty is ErrUnusable", func(t *testing.T) {
		store.Put("jenkins-empty", " \n")
		_, err := read(t, store.Source(t, "jenkins-empty"))
		wantErr(t, err, secrets.ErrUnusable, "empty")
	})
	t.Run("a JSON object is ErrUnusable", func(t *testing.T) {
		store.Put("jenkins-json", `{"token":"`+token+`"}`)
		_, err := read(t, store.Source(t, "jenkins-json"))
		wantErr(t, err, secrets.ErrUnusable, "plain text")
	})
	t.Run("customer managed key without kms:Decrypt is ErrDecrypt", func(t *testing.T) {
		store.Put("jenkins-cmk", token)
		store.UseCustomerKey("jenkins-cmk")
		_, err := read(t, store.Source(t, "jenkins-cmk"))
		wantErr(t, err, secrets.ErrDecrypt, "kms:Decrypt", "customer managed key")
	})
	t.Run("a deadline is kept while the service hangs", func(t *testing.T) {
		store.Put("jenkins-held", token)
		release := srv.Hold(store.Target)
		defer release()
		ctx, cancel := context.WithTimeout(t.Context(), 200*time.Millisecond)
		defer cancel()
		_, err := store.Source(t, "jenkins-held").Read(ctx)
		if !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("Read while held = %v, want a deadline error", err)
		}
	})
	// Last: Deny refuses every later read of this store.
	t.Run("refused by IAM is ErrAccessDenied", func(t *testing.T) {
		store.Put("jenkins-denied", token)
		srv.Deny(store.Target)
		_, err := read(t, store.Source(t, "jenkins-denied"))
		wantErr(t, err, secrets.ErrAccessDenied, "to the instance role", "jenkins-denied")
	})
	t.Run("no value in names or errors", func(t *testing.T) {
		src := store.Source(t, "jenkins-read")
		for _, s := range []string{src.String(), fmt.Sprint(src), fmt.Sprintf("%+v", src)} {
			if strings.Contains(s, token) {
				t.Fatalf("the token shows in %q", s)
			}
		}
	})
}

func read(t *testing.T, src secrets.Source) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	v, err := src.Read(ctx)
	if err != nil && strings.Contains(err.Error(), "11d0e9b3a2c44f5e8f7a6b5c4d3e2f1a0b") {
		t.Fatalf("the error shows the token: %v", err)
	}
	return v.Reveal(), err
}

func wantErr(t *testing.T, err, sentinel error, mentions ...string) {
	t.Helper()
	if !errors.Is(err, sentinel) {
		t.Fatalf("error %v, want one wrapping %v", err, sentinel)
	}
	for _, m := range mentions {
		if !strings.Contains(err.Error(), m) {
			t.Errorf("error %q does not mention %q", err, m)
		}
	}
}

package containertest

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestBuildImageMissingBinary(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := BuildImage(ctx, nil, "x:y", filepath.Join(t.TempDir(), "absent"), nil)
	if err == nil || !strings.Contains(err.Error(), "build image x:y") {
		t.Fatalf("BuildImage = %v, want an error naming the image", err)
	}
}

package clock

import (
	"context"
	"testing"
	"time"
)

func TestSleepFullTime(t *testing.T) {
	if !Sleep(context.Background(), time.Millisecond) {
		t.Fatal("Sleep with a live context reported an early end")
	}
	if !Sleep(context.Background(), 0) || !Sleep(context.Background(), -time.Second) {
		t.Fatal("Sleep of no time with a live context reported an early end")
	}
}

func TestSleepCutShortByContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan bool)
	go func() { done <- Sleep(ctx, time.Hour) }()
	cancel()
	if <-done {
		t.Fatal("Sleep of an hour reported the full time after its context was cancelled")
	}
	if Sleep(ctx, 0) {
		t.Fatal("Sleep of no time reported the full time with an ended context")
	}
}

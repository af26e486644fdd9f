// Command send publishes one job and prints its terminal event as JSON; it exits 0 if the
// job was sent.
//
//	go run ./cmd/send --to +14155550123 --code 271828 [--channel sms] [--url amqp://…]
//	    [--jobs-exchange otpd.jobs] [--events-exchange otpd.events] [--key-id k1 --key SECRET]
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"time"

	otpd "github.com/otpd/otpd/clients/go"
)

func main() {
	url := flag.String("url", "amqp://guest:guest@127.0.0.1:5672/%2f", "the broker")
	jobs := flag.String("jobs-exchange", "otpd.jobs", "otpd's jobs exchange")
	events := flag.String("events-exchange", "otpd.events", "otpd's events exchange")
	channel := flag.String("channel", "sms", "sms, voice, whatsapp or email")
	to := flag.String("to", "", "the destination")
	code := flag.String("code", "", "the code")
	account := flag.String("account-id", "demo-account", "the account")
	keyID := flag.String("key-id", "", "the signing key's id")
	key := flag.String("key", "", "the signing key")
	flag.Parse()

	p, err := otpd.Connect(*url, otpd.Options{JobsExchange: *jobs, EventsExchange: *events,
		KeyID: *keyID, Key: []byte(*key)})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	defer p.Close()
	j := otpd.NewJob(*channel, *to, *code, *account)
	w, err := p.Watch(j.ChallengeID)
	if err == nil {
		err = p.Publish(context.Background(), j)
	}
	var event map[string]interface{}
	if err == nil {
		event, err = w.Terminal(30 * time.Second)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	out, _ := json.Marshal(event)
	fmt.Println(string(out))
	if event["state"] != "sent" {
		os.Exit(1)
	}
}

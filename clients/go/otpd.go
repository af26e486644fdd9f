// Package otpd is a small publisher for otpd (docs/job-v1.md), on amqp091-go: it builds a
// send-code job, signs it when given a key (the otpd-signature v2 scheme), publishes it with
// publisher confirms, and can wait for the challenge's status events.
package otpd

import (
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	amqp "github.com/rabbitmq/amqp091-go"
)

// SignatureHeader is the AMQP header of a signed message.
const SignatureHeader = "otpd-signature"

// Terminal holds the states a challenge's job ends in; receipts may later move "sent" on.
var Terminal = map[string]bool{"sent": true, "delivered": true, "undelivered": true,
	"failed": true, "expired": true, "rate_limited": true, "rejected": true}

// Job is a version 1 job; optional fields are left out when empty.
type Job struct {
	Version     int               `json:"version"`
	ChallengeID string            `json:"challenge_id"`
	AccountID   string            `json:"account_id"`
	Channel     string            `json:"channel"`
	To          string            `json:"to"`
	Code        string            `json:"code"`
	ExpiresAt   time.Time         `json:"expires_at"`
	Locale      string            `json:"locale,omitempty"`
	Template    string            `json:"template,omitempty"`
	Metadata    map[string]string `json:"metadata,omitempty"`
	ClientIP    string            `json:"client_ip,omitempty"`
}

// NewJob is a job with a fresh challenge_id (the idempotency key) expiring in five minutes.
func NewJob(channel, to, code, accountID string) Job {
	id := make([]byte, 16)
	_, _ = rand.Read(id)
	return Job{Version: 1, ChallengeID: "go-" + hex.EncodeToString(id), AccountID: accountID,
		Channel: channel, To: to, Code: code, ExpiresAt: time.Now().UTC().Add(5 * time.Minute)}
}

// Sign is the otpd-signature header: HMAC-SHA256 over "<t>\n<type>\n<body>".
func Sign(body []byte, keyID string, key []byte, kind string, now int64) string {
	mac := hmac.New(sha256.New, key)
	fmt.Fprintf(mac, "%d\n%s\n", now, kind)
	mac.Write(body)
	return fmt.Sprintf("t=%d,kid=%s,v2=%s", now, keyID, hex.EncodeToString(mac.Sum(nil)))
}

// Options say where to publish and listen, and the signing key if jobs are signed.
type Options struct {
	JobsExchange, EventsExchange string
	KeyID                        string
	Key                          []byte
}

// Publisher publishes jobs on a confirm-mode channel.
type Publisher struct {
	conn    *amqp.Connection
	ch      *amqp.Channel
	options Options
}

// Connect opens a connection and a confirm-mode channel.
func Connect(url string, o Options) (*Publisher, error) {
	if o.JobsExchange == "" {
		o.JobsExchange = "otpd.jobs"
	}
	if o.EventsExchange == "" {
		o.EventsExchange = "otpd.events"
	}
	conn, err := amqp.Dial(url)
	if err != nil {
		return nil, err
	}
	ch, err := conn.Channel()
	if err == nil {
		err = ch.Confirm(false)
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return &Publisher{conn: conn, ch: ch, options: o}, nil
}

// Close closes the connection.
func (p *Publisher) Close() error { return p.conn.Close() }

// Publish publishes a job and returns once the broker confirms it.
func (p *Publisher) Publish(ctx context.Context, j Job) error {
	body, err := json.Marshal(j)
	if err != nil {
		return err
	}
	return p.send(ctx, body, j.Channel, j.ChallengeID, "")
}

// Verified reports that the challenge's code was entered correctly.
func (p *Publisher) Verified(ctx context.Context, challengeID string) error {
	return p.feedback(ctx, "verified", challengeID)
}

// Cancel abandons the challenge: its pending fallback steps are not sent.
func (p *Publisher) Cancel(ctx context.Context, challengeID string) error {
	return p.feedback(ctx, "cancel", challengeID)
}

func (p *Publisher) feedback(ctx context.Context, kind, challengeID string) error {
	body, _ := json.Marshal(map[string]interface{}{"version": 1, "challenge_id": challengeID})
	return p.send(ctx, body, kind, challengeID, kind)
}

func (p *Publisher) send(ctx context.Context, body []byte, key, id, kind string) error {
	headers := amqp.Table{}
	if p.options.KeyID != "" && len(p.options.Key) > 0 {
		headers[SignatureHeader] = Sign(body, p.options.KeyID, p.options.Key, kind, time.Now().Unix())
	}
	confirm, err := p.ch.PublishWithDeferredConfirmWithContext(ctx, p.options.JobsExchange, key,
		true, false, amqp.Publishing{ContentType: "application/json", DeliveryMode: amqp.Persistent,
			MessageId: id, Type: kind, Headers: headers, Body: body})
	if err != nil {
		return err
	}
	if !confirm.Wait() {
		return errors.New("the broker did not confirm the message")
	}
	return nil
}

// Events reads one challenge's events from a queue of its own.
type Events struct {
	ch          *amqp.Channel
	deliveries  <-chan amqp.Delivery
	challengeID string
}

// Watch starts listening for a challenge's events; call it before publishing the job.
func (p *Publisher) Watch(challengeID string) (*Events, error) {
	ch, err := p.conn.Channel()
	if err != nil {
		return nil, err
	}
	q, err := ch.QueueDeclare("", false, true, true, false, nil)
	if err == nil {
		err = ch.QueueBind(q.Name, "delivery.#", p.options.EventsExchange, false, nil)
	}
	var deliveries <-chan amqp.Delivery
	if err == nil {
		deliveries, err = ch.Consume(q.Name, "", true, true, false, false, nil)
	}
	if err != nil {
		ch.Close()
		return nil, err
	}
	return &Events{ch: ch, deliveries: deliveries, challengeID: challengeID}, nil
}

// Terminal returns the challenge's first terminal event.
func (e *Events) Terminal(within time.Duration) (map[string]interface{}, error) {
	defer e.ch.Close()
	timeout := time.After(within)
	for {
		select {
		case d, ok := <-e.deliveries:
			if !ok {
				return nil, errors.New("the events stream ended")
			}
			var event map[string]interface{}
			if json.Unmarshal(d.Body, &event) != nil {
				continue
			}
			state, _ := event["state"].(string)
			if event["challenge_id"] == e.challengeID && Terminal[state] {
				return event, nil
			}
		case <-timeout:
			return nil, fmt.Errorf("no terminal event for %s in %s", e.challengeID, within)
		}
	}
}

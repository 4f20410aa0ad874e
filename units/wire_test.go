package units

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	godbus "github.com/godbus/dbus/v5"
)

func TestAuthPreamble(t *testing.T) {
	for uid, want := range map[int]string{
		0:    "\x00AUTH EXTERNAL 30\r\nBEGIN\r\n",
		1000: "\x00AUTH EXTERNAL 31303030\r\nBEGIN\r\n",
	} {
		if got := string(authPreamble(uid)); got != want {
			t.Errorf("uid %d: %q, want %q", uid, got, want)
		}
	}
}

func TestCheckAuthReply(t *testing.T) {
	for line, ok := range map[string]bool{
		"OK 1f2e3d4c5b6a79880123456789abcdef\r\n": true,
		"OK 1F2E3D4C5B6A79880123456789ABCDEF\r\n": true,
		"OK 1f2e3d4c5b6a79880123456789abcdef\n":   false, // no CR
		"OK 1f2e3d4c\r\n":                         false,
		"OK 1f2e3d4c5b6a79880123456789abcdeg\r\n": false,
		"REJECTED EXTERNAL\r\n":                   false,
		"ERROR\r\n":                               false,
		"DATA\r\n":                                false,
		"\r\n":                                    false,
	} {
		if err := checkAuthReply([]byte(line)); (err == nil) != ok {
			t.Errorf("%q: err = %v, want ok=%v", line, err, ok)
		}
	}
}

// encodeMsg encodes msg as a peer would send it, with serial.
func encodeMsg(t testing.TB, msg *godbus.Message, order binary.ByteOrder, serial uint32) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := msg.EncodeTo(&buf, order); err != nil {
		t.Fatal(err)
	}
	b := buf.Bytes()
	order.PutUint32(b[8:], serial)
	return b
}

func signalMsg(member, sig string, body ...any) *godbus.Message {
	h := map[godbus.HeaderField]godbus.Variant{
		godbus.FieldPath:      godbus.MakeVariant(godbus.ObjectPath(managerPath)),
		godbus.FieldInterface: godbus.MakeVariant(managerIface),
		godbus.FieldMember:    godbus.MakeVariant(member),
		godbus.FieldSender:    godbus.MakeVariant("org.freedesktop.systemd1"),
	}
	if sig != "" {
		h[godbus.FieldSignature] = godbus.MakeVariant(godbus.ParseSignatureMust(sig))
	}
	return &godbus.Message{Type: godbus.TypeSignal, Headers: h, Body: body}
}

func jobRemovedMsg(id uint32, job, unit, result string) *godbus.Message {
	return signalMsg("JobRemoved", "uoss", id, godbus.ObjectPath(job), unit, result)
}

func returnMsg(replySerial uint32, body ...any) *godbus.Message {
	h := map[godbus.HeaderField]godbus.Variant{
		godbus.FieldReplySerial: godbus.MakeVariant(replySerial),
	}
	if len(body) > 0 {
		h[godbus.FieldSignature] = godbus.MakeVariant(godbus.SignatureOf(body...))
	}
	return &godbus.Message{Type: godbus.TypeMethodReply, Headers: h, Body: body}
}

func errorMsg(replySerial uint32, name, text string) *godbus.Message {
	return &godbus.Message{Type: godbus.TypeError, Headers: map[godbus.HeaderField]godbus.Variant{
		godbus.FieldReplySerial: godbus.MakeVariant(replySerial),
		godbus.FieldErrorName:   godbus.MakeVariant(name),
		godbus.FieldSignature:   godbus.MakeVariant(godbus.SignatureOf(text)),
	}, Body: []any{text}}
}

// parseAll parses a whole encoded message's header as the read loop does.
func parseAll(b []byte) (msgHeader, error) {
	h, err := parseFixedHeader(b)
	if err != nil {
		return h, err
	}
	if len(b) < h.size {
		return h, errShortFields
	}
	return h, parseHeaderFields(&h, b[:h.size])
}

func TestParseHeader(t *testing.T) {
	for _, order := range []binary.ByteOrder{binary.LittleEndian, binary.BigEndian} {
		b := encodeMsg(t, jobRemovedMsg(42, "/org/freedesktop/systemd1/job/42", "a.scope", "done"), order, 77)
		h, err := parseAll(b)
		if err != nil {
			t.Fatalf("%v: %v", order, err)
		}
		if h.typ != msgSignal || h.serial != 77 || h.member != "JobRemoved" || h.iface != managerIface ||
			h.path != managerPath || h.signature != "uoss" || h.size%8 != 0 || h.size+int(h.bodyLen) != len(b) {
			t.Errorf("%v: header %+v (message of %d bytes)", order, h, len(b))
		}
		job, unit, result, err := parseJobRemoved(h.order, b[h.size:])
		if err != nil || job != "/org/freedesktop/systemd1/job/42" || unit != "a.scope" || result != "done" {
			t.Errorf("%v: JobRemoved %q %q %q %v", order, job, unit, result, err)
		}

		b = encodeMsg(t, returnMsg(1, godbus.ObjectPath("/org/freedesktop/systemd1/job/7")), order, 5)
		if h, err = parseAll(b); err != nil || h.typ != msgMethodReturn || h.replySerial != 1 || h.signature != "o" {
			t.Errorf("%v: method return: %+v, %v", order, h, err)
		}
		b = encodeMsg(t, errorMsg(1, dbusUnitExists, "Unit x.scope was already loaded or has a fragment file."), order, 6)
		if h, err = parseAll(b); err != nil || h.typ != msgError || h.replySerial != 1 {
			t.Errorf("%v: error: %+v, %v", order, h, err)
		}
	}
}

// A JobRemoved signal as systemd 252 sent it on the private socket of the
// box (captured from nsrun -q --unit=nsrun-0123456789ab -- true), little
// endian, serial 10, job 6, with path, interface, member, sender and
// signature fields.
var goldenJobRemoved = mustHex("" +
	"6c040101510000000a000000a200000001016f00190000002f6f72672f667265" +
	"656465736b746f702f73797374656d64310000000000000002017300200000006f" +
	"72672e667265656465736b746f702e73797374656d64312e4d616e616765720000" +
	"000000000000030173000a0000004a6f6252656d6f76656400000000000007017300" +
	"180000006f72672e667265656465736b746f702e73797374656d6431000000000000" +
	"00000801670004756f737300000000000000060000001f0000002f6f72672f667265" +
	"656465736b746f702f73797374656d64312f6a6f622f3600180000006e7372756e2d" +
	"3031323334353637383961622e73636f70650000000004000000646f6e6500")

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

func TestParseGoldenJobRemoved(t *testing.T) {
	h, err := parseAll(goldenJobRemoved)
	if err != nil {
		t.Fatal(err)
	}
	if h.typ != msgSignal || h.serial != 10 || h.member != "JobRemoved" || h.iface != managerIface || h.signature != "uoss" {
		t.Errorf("header %+v", h)
	}
	if h.size+int(h.bodyLen) != len(goldenJobRemoved) {
		t.Fatalf("header %d + body %d bytes, message %d", h.size, h.bodyLen, len(goldenJobRemoved))
	}
	job, unit, result, err := parseJobRemoved(h.order, goldenJobRemoved[h.size:])
	if err != nil || job != "/org/freedesktop/systemd1/job/6" || unit != "nsrun-0123456789ab.scope" || result != "done" {
		t.Errorf("JobRemoved %q %q %q %v", job, unit, result, err)
	}
	// godbus reads the same.
	msg, err := godbus.DecodeMessage(bytes.NewReader(goldenJobRemoved))
	if err != nil {
		t.Fatal(err)
	}
	if want := []any{uint32(6), godbus.ObjectPath(job), unit, result}; !reflect.DeepEqual(msg.Body, want) {
		t.Errorf("godbus body %v, want %v", msg.Body, want)
	}
}

// Every truncation of a message is an error, never a panic or a success
// that reads past the end.
func TestParseHeaderTruncated(t *testing.T) {
	b := goldenJobRemoved
	full, _ := parseAll(b)
	for n := 0; n < full.size; n++ {
		if _, err := parseAll(b[:n]); err == nil {
			t.Errorf("header cut to %d of %d bytes parsed", n, full.size)
		}
	}
	body := b[full.size:]
	for n := 0; n < len(body)-1; n++ {
		if _, _, _, err := parseJobRemoved(full.order, body[:n]); err == nil {
			t.Errorf("JobRemoved body cut to %d of %d bytes parsed", n, len(body))
		}
	}
}

func TestParseFixedHeaderRefuses(t *testing.T) {
	good := goldenJobRemoved[:fixedHeaderLen]
	for name, mod := range map[string]func([]byte){
		"byte order": func(b []byte) { b[0] = 'x' },
		"version":    func(b []byte) { b[3] = 2 },
		"body size":  func(b []byte) { binary.LittleEndian.PutUint32(b[4:], 1<<27) },
		"fields":     func(b []byte) { binary.LittleEndian.PutUint32(b[12:], 1<<27) },
	} {
		b := bytes.Clone(good)
		mod(b)
		if _, err := parseFixedHeader(b); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func FuzzParseHeader(f *testing.F) {
	f.Add(goldenJobRemoved)
	f.Add(encodeMsg(f, returnMsg(1, godbus.ObjectPath("/j/1")), binary.BigEndian, 3))
	f.Add(encodeMsg(f, errorMsg(1, "a.b", "c"), binary.LittleEndian, 3))
	f.Fuzz(func(t *testing.T, b []byte) {
		h, err := parseAll(b)
		if err != nil || len(b) < h.size {
			return
		}
		_, _, _, _ = parseJobRemoved(h.order, b[h.size:])
	})
}

// The call as encoded: serial set, the arguments godbus reads back.
func TestEncodeCall(t *testing.T) {
	props, err := ScopeProperties(ScopeSpec{Name: "x.scope", PIDs: []int{7}, Properties: []Property{mustParse(t, "MemoryMax=1G")}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := encodeCall(9, "StartTransientUnit", "x.scope", "fail", props, []auxUnit{})
	if err != nil {
		t.Fatal(err)
	}
	msg, err := godbus.DecodeMessage(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if msg.Serial() != 9 || msg.Type != godbus.TypeMethodCall {
		t.Errorf("serial %d, type %v", msg.Serial(), msg.Type)
	}
	for f, want := range map[godbus.HeaderField]any{
		godbus.FieldPath:      godbus.ObjectPath(managerPath),
		godbus.FieldInterface: managerIface,
		godbus.FieldMember:    "StartTransientUnit",
	} {
		if got := msg.Headers[f].Value(); got != want {
			t.Errorf("header %d = %v, want %v", f, got, want)
		}
	}
	if sig := msg.Headers[godbus.FieldSignature].Value().(godbus.Signature).String(); sig != "ssa(sv)a(sa(sv))" {
		t.Errorf("signature %s", sig)
	}
	if len(msg.Body) != 4 || msg.Body[0] != "x.scope" || msg.Body[1] != "fail" {
		t.Fatalf("body %v", msg.Body)
	}
	got := map[string]any{}
	for _, p := range msg.Body[2].([][]any) {
		got[p[0].(string)] = p[1].(godbus.Variant).Value()
	}
	if got["MemoryMax"] != uint64(1<<30) || got["Delegate"] != true || !reflect.DeepEqual(got["PIDs"], []uint32{7}) {
		t.Errorf("properties %v", got)
	}
}

// fakeManager is the other end of a wire for the read loop's logic: it
// reads the preamble and the call, answers OK, then sends msgs and closes.
func fakeManager(t *testing.T, msgs ...[]byte) *wire {
	t.Helper()
	client, server := socketPair(t)
	t.Cleanup(func() { client.Close() })
	go func() {
		defer server.Close()
		pre := make([]byte, len(authPreamble(os.Getuid())))
		if _, err := io.ReadFull(server, pre); err != nil {
			return
		}
		call, err := godbus.DecodeMessage(server)
		if err != nil || call.Serial() != callSerial || !bytes.Equal(pre, authPreamble(os.Getuid())) {
			t.Errorf("fake manager: preamble %q, call %v, %v", pre, call, err)
			return
		}
		out := []byte("OK 0123456789abcdef0123456789abcdef\r\n")
		for _, m := range msgs {
			out = append(out, m...)
		}
		_, _ = server.Write(out)
	}()
	return &wire{conn: client, r: bufio.NewReader(newQuietReader(client)), via: "fake"}
}

// socketPair returns both ends of a connected unix stream socket, as the
// private socket is (the wire's quiet reader needs a file descriptor).
func socketPair(t *testing.T) (net.Conn, net.Conn) {
	t.Helper()
	fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	var conns [2]net.Conn
	for i, fd := range fds {
		f := os.NewFile(uintptr(fd), "socketpair")
		c, err := net.FileConn(f) // a duplicate: f is closed right after
		f.Close()
		if err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	return conns[0], conns[1]
}

func TestWireResults(t *testing.T) {
	le := binary.LittleEndian
	const job = "/org/freedesktop/systemd1/job/5"
	reply := encodeMsg(t, returnMsg(callSerial, godbus.ObjectPath(job)), le, 100)
	noise := [][]byte{
		encodeMsg(t, signalMsg("UnitNew", "so", "other.scope", godbus.ObjectPath("/u/other")), le, 90),
		encodeMsg(t, jobRemovedMsg(4, "/org/freedesktop/systemd1/job/4", "other.scope", "failed"), le, 91),
		encodeMsg(t, returnMsg(callSerial+1, "not ours"), le, 92),
		encodeMsg(t, &godbus.Message{Type: godbus.TypeSignal, Headers: map[godbus.HeaderField]godbus.Variant{
			godbus.FieldPath:      godbus.MakeVariant(godbus.ObjectPath("/org/freedesktop/systemd1/unit/other_2escope")),
			godbus.FieldInterface: godbus.MakeVariant("org.freedesktop.DBus.Properties"),
			godbus.FieldMember:    godbus.MakeVariant("PropertiesChanged"),
			godbus.FieldSignature: godbus.MakeVariant(godbus.ParseSignatureMust("sa{sv}as")),
		}, Body: []any{"org.freedesktop.systemd1.Unit", map[string]godbus.Variant{"ActiveState": godbus.MakeVariant("active")}, []string{}}}, binary.BigEndian, 93),
	}
	mine := func(result string) []byte {
		return encodeMsg(t, jobRemovedMsg(5, job, "x.scope", result), le, 101)
	}
	cat := func(parts ...[]byte) [][]byte { return parts }
	for name, tc := range map[string]struct {
		msgs    [][]byte
		result  string
		dropped int // 0 no, 1 before the reply, 2 after
		errName string
	}{
		"reply first":            {msgs: append(append(cat(reply), noise...), mine("done")), result: "done"},
		"JobRemoved first":       {msgs: append(append(cat(mine("failed")), noise...), reply), result: "failed"},
		"error":                  {msgs: append(noise, encodeMsg(t, errorMsg(callSerial, dbusUnitExists, "exists"), le, 7)), errName: dbusUnitExists},
		"closed before reply":    {msgs: noise, dropped: 1},
		"closed after reply":     {msgs: append(cat(reply), noise...), dropped: 2},
		"closed inside a header": {msgs: cat(reply, mine("done")[:20]), dropped: 2},
	} {
		t.Run(name, func(t *testing.T) {
			w := fakeManager(t, tc.msgs...)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			result, err := w.startTransientUnit(ctx, "x.scope", "fail", nil)
			var d *droppedError
			switch {
			case tc.dropped > 0:
				if !errors.As(err, &d) || d.replied != (tc.dropped == 2) {
					t.Errorf("result %q, err %v; want dropped (after the reply: %v)", result, err, tc.dropped == 2)
				}
			case tc.errName != "":
				if dbusErrorName(err) != tc.errName {
					t.Errorf("result %q, err %v; want D-Bus error %s", result, err, tc.errName)
				}
			case err != nil || result != tc.result:
				t.Errorf("result %q, err %v; want %q", result, err, tc.result)
			}
		})
	}
}

// A wire whose authentication went out early (Conn.StartAuth) sends the
// call alone: the manager reads one preamble, then the call.
func TestWireAuthSentEarly(t *testing.T) {
	le := binary.LittleEndian
	const job = "/org/freedesktop/systemd1/job/5"
	w := fakeManager(t,
		encodeMsg(t, returnMsg(callSerial, godbus.ObjectPath(job)), le, 100),
		encodeMsg(t, jobRemovedMsg(5, job, "x.scope", "done"), le, 101))
	c := &Conn{raw: w.conn, via: "fake"}
	c.StartAuth()
	raw, _, authed := c.takeRaw()
	if raw != w.conn || !authed {
		t.Fatalf("takeRaw = %v, authed %v; want the socket, authenticated", raw, authed)
	}
	c.StartAuth() // taken: nothing to send
	w.authSent = true
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if result, err := w.startTransientUnit(ctx, "x.scope", "fail", nil); err != nil || result != "done" {
		t.Errorf("result %q, err %v; want done", result, err)
	}
}

func TestWireAuthRefused(t *testing.T) {
	client, server := socketPair(t)
	defer client.Close()
	defer server.Close()
	go func() { _, _ = io.Copy(io.Discard, server) }()
	go func() { _, _ = server.Write([]byte("REJECTED EXTERNAL\r\n")) }()
	w := &wire{conn: client, r: bufio.NewReader(newQuietReader(client)), via: "unix:path=/run/systemd/private"}
	_, err := w.startTransientUnit(context.Background(), "x.scope", "fail", nil)
	var d *droppedError
	if err == nil || errors.As(err, &d) || !strings.Contains(err.Error(), "/run/systemd/private") || !strings.Contains(err.Error(), "REJECTED") {
		t.Errorf("err = %v, want an authentication error naming the socket and the answer", err)
	}
}

func TestWireContextEnds(t *testing.T) {
	client, server := socketPair(t)
	defer client.Close()
	defer server.Close()
	go func() { _, _ = io.Copy(io.Discard, server) }() // reads, never answers
	w := &wire{conn: client, r: bufio.NewReader(newQuietReader(client)), via: "fake"}
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := w.startTransientUnit(ctx, "x.scope", "fail", nil); !errors.Is(err, context.Canceled) {
		t.Errorf("err = %v, want context.Canceled", err)
	}
}

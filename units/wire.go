package units

// The launch path on a manager's private socket: one StartTransientUnit
// call and the wait for its job, without a general D-Bus client.
//
// On the private socket systemd sends every connection every unit's
// signals, unconditionally (systemd 252: bus_foreach_bus sends to all
// private buses; no AddMatch or Subscribe involved). A general client
// decodes each of them; with many launches at once that decoding was most
// of the CPU time. Here each message's fixed header and header fields are
// read, and the body of every message but our reply and JobRemoved signals
// is skipped unread.
//
// Exchange (nsrun the client, systemd's sd-bus the server):
//
//	nsrun                                              systemd
//	  | NUL "AUTH EXTERNAL <hex uid>\r\n" "BEGIN\r\n"     |
//	  | METHOD_CALL StartTransientUnit, serial 1          |  one write (sd-bus's server keeps
//	  |-------------------------------------------------->|  what follows BEGIN as the first
//	  |                           "OK <32 hex guid>\r\n"  |  message: sd-bus clients pipeline
//	  |<--------------------------------------------------|  the same way)
//	  | SIGNAL UnitNew, JobNew, PropertiesChanged, ...     |  any unit's: header read, body skipped
//	  | SIGNAL JobRemoved(u id, o job, s unit, s result)   |  any job's; ours may come before
//	  | METHOD_RETURN reply_serial=1 (o job) | ERROR       |  the reply: results are kept by
//	  |<--------------------------------------------------|  job path until the reply names ours
//	  close once our job's JobRemoved is in
//
// The authentication may also go out on its own as soon as the socket is
// connected (Conn.StartAuth), so that systemd's per-connection set-up (its
// OK comes 1 to 2 ms after it reads the authentication) overlaps the
// caller's planning; the call follows alone once it is ready.
//
// A message (D-Bus specification, "Message Format"): 12 fixed bytes
// (endianness 'l' or 'B', type, flags, version, body length, serial), the
// header field array a(yv) (its byte length first), padding to 8, body.

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"syscall"
	"time"

	godbus "github.com/godbus/dbus/v5"
)

const (
	managerPath  = "/org/freedesktop/systemd1"
	managerIface = "org.freedesktop.systemd1.Manager"

	// maxMessage is the D-Bus limit on a whole message (2^27 bytes).
	maxMessage = 1 << 27
	// callSerial is the serial of the one call the launch path sends.
	callSerial = 1
)

// D-Bus message types (the second byte of a message).
const (
	msgMethodCall   = 1
	msgMethodReturn = 2
	msgError        = 3
	msgSignal       = 4
)

// msgHeader is what the launch path reads of every message: the fixed
// part and the header fields it branches on.
type msgHeader struct {
	order       binary.ByteOrder
	typ         byte
	bodyLen     uint32
	serial      uint32
	replySerial uint32
	path        string
	iface       string
	member      string
	signature   string
	fieldsEnd   int // where the field array ends: 16 + its length
	size        int // bytes up to the body: fieldsEnd and padding to 8
}

// fixedHeaderLen is the part of every message before the header fields:
// 12 fixed bytes and the field array's length.
const fixedHeaderLen = 16

// parseFixedHeader reads the first 16 bytes of a message: byte order, type,
// body length, serial and the length of the header field array. It returns
// the length of the whole header (fixed part, fields, padding to 8).
func parseFixedHeader(b []byte) (msgHeader, error) {
	var h msgHeader
	if len(b) < fixedHeaderLen {
		return h, fmt.Errorf("short message header (%d bytes)", len(b))
	}
	switch b[0] {
	case 'l':
		h.order = binary.LittleEndian
	case 'B':
		h.order = binary.BigEndian
	default:
		return h, fmt.Errorf("message with byte order %q", b[0])
	}
	if b[3] != 1 {
		return h, fmt.Errorf("message of protocol version %d", b[3])
	}
	h.typ = b[1]
	h.bodyLen = h.order.Uint32(b[4:])
	h.serial = h.order.Uint32(b[8:])
	fields := h.order.Uint32(b[12:])
	if uint64(fields) > maxMessage || uint64(h.bodyLen) > maxMessage ||
		uint64(align8(fixedHeaderLen+int(fields)))+uint64(h.bodyLen) > maxMessage {
		return h, fmt.Errorf("message too long (header fields %d bytes, body %d bytes)", fields, h.bodyLen)
	}
	h.fieldsEnd = fixedHeaderLen + int(fields)
	h.size = align8(h.fieldsEnd)
	return h, nil
}

// parseHeaderFields fills h's fields from b, the message from its start
// up to at least the end of the field array (h.fieldsEnd). Alignment counts from the message's
// start, as the specification says. Fields of the standard types (o, s, g,
// u) are read; a field of another type is a protocol error.
func parseHeaderFields(h *msgHeader, b []byte) error {
	if len(b) < h.fieldsEnd {
		return errShortFields
	}
	b = b[:h.fieldsEnd]
	pos := fixedHeaderLen
	for pos < len(b) {
		pos = align8(pos) // each (yv) is a struct
		if pos+3 > len(b) {
			return errShortFields
		}
		code := b[pos]
		sigLen := int(b[pos+1])
		if pos+2+sigLen+1 > len(b) {
			return errShortFields
		}
		sig := string(b[pos+2 : pos+2+sigLen])
		pos += 2 + sigLen + 1 // the signature's NUL
		var str string
		var num uint32
		switch sig {
		case "s", "o":
			pos = align4(pos)
			if pos+4 > len(b) {
				return errShortFields
			}
			n := int(h.order.Uint32(b[pos:]))
			if n < 0 || pos+4+n+1 > len(b) {
				return errShortFields
			}
			str = string(b[pos+4 : pos+4+n])
			pos += 4 + n + 1
		case "g":
			if pos >= len(b) {
				return errShortFields
			}
			n := int(b[pos])
			if pos+1+n+1 > len(b) {
				return errShortFields
			}
			str = string(b[pos+1 : pos+1+n])
			pos += 1 + n + 1
		case "u":
			pos = align4(pos)
			if pos+4 > len(b) {
				return errShortFields
			}
			num = h.order.Uint32(b[pos:])
			pos += 4
		default:
			return fmt.Errorf("header field %d of type %q", code, sig)
		}
		switch code {
		case byte(godbus.FieldPath):
			h.path = str
		case byte(godbus.FieldInterface):
			h.iface = str
		case byte(godbus.FieldMember):
			h.member = str
		case byte(godbus.FieldReplySerial):
			h.replySerial = num
		case byte(godbus.FieldSignature):
			h.signature = str
		}
	}
	return nil
}

var errShortFields = errors.New("header fields end early")

func align4(n int) int { return (n + 3) &^ 3 }
func align8(n int) int { return (n + 7) &^ 7 }

// parseJobRemoved reads the body of a JobRemoved signal (uoss: id, job
// path, unit, result). The body starts 8-aligned in the message, so
// alignment counts from its start.
func parseJobRemoved(order binary.ByteOrder, b []byte) (job, unit, result string, err error) {
	pos := 4 // the job id
	var s [3]string
	for i := range s {
		pos = align4(pos)
		if pos+4 > len(b) {
			return "", "", "", errors.New("JobRemoved body ends early")
		}
		n := int(order.Uint32(b[pos:]))
		if n < 0 || pos+4+n+1 > len(b) {
			return "", "", "", errors.New("JobRemoved body ends early")
		}
		s[i] = string(b[pos+4 : pos+4+n])
		pos += 4 + n + 1
	}
	return s[0], s[1], s[2], nil
}

// authPreamble is what the client sends before its first message: the
// credentials byte, EXTERNAL authentication as uid (hex-encoded decimal,
// as the specification says) and BEGIN, without waiting for the answers.
func authPreamble(uid int) []byte {
	id := strconv.Itoa(uid)
	b := make([]byte, 0, 32+2*len(id))
	b = append(b, 0)
	b = append(b, "AUTH EXTERNAL "...)
	for i := 0; i < len(id); i++ {
		b = append(b, "0123456789abcdef"[id[i]>>4], "0123456789abcdef"[id[i]&0xf])
	}
	return append(b, "\r\nBEGIN\r\n"...)
}

// checkAuthReply checks the server's answer to the preamble: "OK" and the
// server's GUID (32 hex digits).
func checkAuthReply(line []byte) error {
	l := bytes.TrimSuffix(line, []byte("\r\n"))
	guid, ok := bytes.CutPrefix(l, []byte("OK "))
	if !ok || len(guid) != 32 || !allHex(guid) || len(l) == len(line) {
		return fmt.Errorf("server answered %q", line)
	}
	return nil
}

func allHex(b []byte) bool {
	for _, c := range b {
		if !isHex(c) {
			return false
		}
	}
	return true
}

// encodeCall encodes a method call to the manager with serial. godbus
// encodes (the body's a(sv) properties are godbus Variants); its Message
// keeps the serial unexported and writes 0, so the serial is set in the
// encoded header, at byte 8, in the byte order encoded.
func encodeCall(serial uint32, member string, body ...any) ([]byte, error) {
	msg := &godbus.Message{
		Type: godbus.TypeMethodCall,
		Headers: map[godbus.HeaderField]godbus.Variant{
			godbus.FieldPath:        godbus.MakeVariant(godbus.ObjectPath(managerPath)),
			godbus.FieldInterface:   godbus.MakeVariant(managerIface),
			godbus.FieldMember:      godbus.MakeVariant(member),
			godbus.FieldDestination: godbus.MakeVariant("org.freedesktop.systemd1"),
		},
		Body: body,
	}
	if len(body) > 0 {
		msg.Headers[godbus.FieldSignature] = godbus.MakeVariant(godbus.SignatureOf(body...))
	}
	var buf bytes.Buffer
	if err := msg.EncodeTo(&buf, binary.LittleEndian); err != nil {
		return nil, err
	}
	b := buf.Bytes()
	binary.LittleEndian.PutUint32(b[8:], serial)
	return b, nil
}

// auxUnit is StartTransientUnit's fourth argument, a(sa(sv)): auxiliary
// units, none here.
type auxUnit struct {
	Name       string
	Properties []Property
}

// droppedError: the connection to the manager went away before the job's
// result came in. replied says whether the manager had answered the call
// (then the unit exists and its job was queued).
type droppedError struct {
	replied bool
	err     error
}

func (e *droppedError) Error() string {
	return "the connection to the manager dropped: " + e.err.Error()
}

func (e *droppedError) Unwrap() error { return e.err }

// wire is one private-socket connection of the launch path.
type wire struct {
	conn net.Conn
	r    *bufio.Reader
	via  string
	buf  []byte // the current message's header, and its body when read
	// authSent: the authentication went out already (Conn.StartAuth);
	// only the call is written.
	authSent bool
}

// startTransientUnit sends the authentication (unless sent already:
// authSent) and StartTransientUnit(name, mode, props, no auxiliary units)
// in one write and reads until the job's
// JobRemoved signal: it returns the job's result ("done", "failed", ...).
// A D-Bus error reply is returned as a godbus.Error; a connection that
// ends early as a *droppedError; a context that ends as its error.
func (w *wire) startTransientUnit(ctx context.Context, name, mode string, props []Property) (string, error) {
	call, err := encodeCall(callSerial, "StartTransientUnit", name, mode, props, []auxUnit{})
	if err != nil {
		return "", fmt.Errorf("encode StartTransientUnit: %w", err)
	}
	// A deadline in the past ends blocked reads and writes once ctx ends.
	// Only then: a socket deadline set to ctx's own deadline can fire
	// before ctx's timer marks ctx done, and the read's "i/o timeout" was
	// then reported as is, not as the job timeout (and jobTimedOut's reset
	// skipped). AfterFunc runs after ctx.Err() is set.
	stop := context.AfterFunc(ctx, func() { _ = w.conn.SetDeadline(time.Unix(1, 0)) })
	defer stop()
	fail := func(err error, replied bool) (string, error) {
		if ctx.Err() != nil {
			return "", ctx.Err()
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) || isConnReset(err) {
			return "", &droppedError{replied: replied, err: err}
		}
		return "", err
	}

	out := call
	if !w.authSent {
		out = append(authPreamble(os.Getuid()), call...)
	}
	if _, err := w.conn.Write(out); err != nil {
		return fail(err, false)
	}
	line, err := w.r.ReadSlice('\n')
	if err != nil {
		if errors.Is(err, bufio.ErrBufferFull) {
			return "", fmt.Errorf("authenticate to %s: answer line too long", w.via)
		}
		return fail(err, false)
	}
	if err := checkAuthReply(line); err != nil {
		return "", fmt.Errorf("authenticate to %s: %w", w.via, err)
	}

	var job string                 // our job's path, once the reply named it
	removed := map[string]string{} // JobRemoved results by job path, before the reply
	for {
		h, err := w.readHeader()
		if err != nil {
			return fail(err, job != "")
		}
		switch {
		case h.typ == msgSignal && h.member == "JobRemoved" && h.iface == managerIface && h.signature == "uoss":
			body, err := w.readBody(h)
			if err != nil {
				return fail(err, job != "")
			}
			path, _, result, err := parseJobRemoved(h.order, body)
			if err != nil {
				return "", fmt.Errorf("read from %s: %w", w.via, err)
			}
			if job == "" {
				removed[path] = result
			} else if path == job {
				return result, nil
			}
		case (h.typ == msgMethodReturn || h.typ == msgError) && h.replySerial == callSerial:
			body, err := w.readBody(h)
			if err != nil {
				return fail(err, false)
			}
			msg, err := godbus.DecodeMessage(bytes.NewReader(w.buf[:h.size+len(body)]))
			if err != nil {
				return "", fmt.Errorf("read from %s: %w", w.via, err)
			}
			if h.typ == msgError {
				return "", replyError(msg)
			}
			p, ok := singleBody[godbus.ObjectPath](msg)
			if !ok {
				return "", fmt.Errorf("read from %s: StartTransientUnit answered %v, not a job path", w.via, msg.Body)
			}
			job = string(p)
			if result, ok := removed[job]; ok {
				return result, nil
			}
			removed = nil
		default:
			if _, err := w.r.Discard(int(h.bodyLen)); err != nil {
				return fail(err, job != "")
			}
		}
	}
}

// readHeader reads one message's header into w.buf and parses it.
func (w *wire) readHeader() (msgHeader, error) {
	if cap(w.buf) < 512 {
		w.buf = make([]byte, 512)
	}
	w.buf = w.buf[:fixedHeaderLen]
	if _, err := io.ReadFull(w.r, w.buf); err != nil {
		return msgHeader{}, err
	}
	h, err := parseFixedHeader(w.buf)
	if err != nil {
		return h, fmt.Errorf("read from %s: %w", w.via, err)
	}
	w.buf = grow(w.buf, h.size)
	if _, err := io.ReadFull(w.r, w.buf[fixedHeaderLen:h.size]); err != nil {
		return h, unexpectedEOF(err)
	}
	if err := parseHeaderFields(&h, w.buf[:h.size]); err != nil {
		return h, fmt.Errorf("read from %s: %w", w.via, err)
	}
	return h, nil
}

// readBody reads the body of the message whose header readHeader just
// read; w.buf then holds the whole message.
func (w *wire) readBody(h msgHeader) ([]byte, error) {
	w.buf = grow(w.buf, h.size+int(h.bodyLen))
	if _, err := io.ReadFull(w.r, w.buf[h.size:]); err != nil {
		return nil, unexpectedEOF(err)
	}
	return w.buf[h.size:], nil
}

// grow returns b resized to n bytes, keeping its content.
func grow(b []byte, n int) []byte {
	if n <= cap(b) {
		return b[:n]
	}
	nb := make([]byte, n)
	copy(nb, b)
	return nb
}

// isConnReset tells a connection the manager closed under a write or
// with data unread.
func isConnReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

func unexpectedEOF(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// replyError makes a D-Bus error reply a godbus.Error, as godbus returns
// them, so dbusErrorName and errors.As work on it.
func replyError(msg *godbus.Message) error {
	name, _ := msg.Headers[godbus.FieldErrorName].Value().(string)
	return godbus.Error{Name: name, Body: msg.Body}
}

// singleBody returns a message's only body value as a T.
func singleBody[T any](msg *godbus.Message) (T, bool) {
	var zero T
	if len(msg.Body) != 1 {
		return zero, false
	}
	v, ok := msg.Body[0].(T)
	return v, ok
}

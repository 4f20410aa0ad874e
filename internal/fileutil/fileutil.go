// Package fileutil holds small file helpers shared by nsrun's tools
// (the bench and the VM runner).
package fileutil

import (
	"io"
	"os"
)

// CopyExecutable copies src to dst (created or truncated, mode 0755).
func CopyExecutable(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

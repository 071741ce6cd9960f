package node

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// process is one running container instance: a process group whose stdout and stderr
// are written, line by line with a timestamp and stream name, to a log file.
type process struct {
	cmd  *exec.Cmd
	pgid int
}

type exitInfo struct {
	code   int32
	signal int32
	err    error
}

// logLine formats one stored log line: "<RFC3339Nano> <stream> <text>".
func logLine(t time.Time, stream, text string) string {
	return t.UTC().Format(time.RFC3339Nano) + " " + stream + " " + text
}

// parseLogLine splits a stored log line; ok is false for lines testenv did not write.
func parseLogLine(line string) (ts time.Time, stream, text string, ok bool) {
	a, rest, found := strings.Cut(line, " ")
	if !found {
		return time.Time{}, "", line, false
	}
	s, text, found := strings.Cut(rest, " ")
	if !found {
		s, text = rest, ""
	}
	t, err := time.Parse(time.RFC3339Nano, a)
	if err != nil {
		return time.Time{}, "", line, false
	}
	return t, s, text, true
}

// resolveCommand makes a relative table path ("target/debug/shortener") absolute against
// the repository root, and looks bare names up on PATH like a shell.
func resolveCommand(argv0, repoRoot string) (string, error) {
	if strings.Contains(argv0, "/") {
		if !filepath.IsAbs(argv0) {
			argv0 = filepath.Join(repoRoot, argv0)
		}
		if _, err := os.Stat(argv0); err != nil {
			return "", fmt.Errorf("executable file not found: %s (build it first)", argv0)
		}
		return argv0, nil
	}
	return exec.LookPath(argv0)
}

// startProcess runs argv in its own process group. pidDir gets a file named after the
// group id so `make cluster-down` can kill every pod process even if the agent died.
func startProcess(argv, env []string, dir, logPath, pidDir string, now func() time.Time, exited func(exitInfo)) (*process, error) {
	if len(argv) == 0 {
		return nil, errors.New("container has no command")
	}
	path, err := resolveCommand(argv[0], dir)
	if err != nil {
		return nil, err
	}
	logFile, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		logFile.Close()
		return nil, err
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		logFile.Close()
		outR.Close()
		outW.Close()
		return nil, err
	}
	cmd := exec.Command(path, argv[1:]...)
	cmd.Args[0] = argv[0]
	cmd.Env = env
	cmd.Dir = dir
	cmd.Stdin = nil
	cmd.Stdout = outW
	cmd.Stderr = errW
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	startErr := cmd.Start()
	outW.Close()
	errW.Close()
	if startErr != nil {
		outR.Close()
		errR.Close()
		logFile.Close()
		return nil, startErr
	}
	pgid := cmd.Process.Pid
	pidFile := filepath.Join(pidDir, strconv.Itoa(pgid))
	_ = os.WriteFile(pidFile, nil, 0o644)

	lines := make(chan string, 256)
	copyDone := make(chan struct{}, 2)
	pump := func(r io.ReadCloser, stream string) {
		defer r.Close()
		br := bufio.NewReader(r)
		for {
			s, err := br.ReadString('\n')
			if s != "" {
				lines <- logLine(now(), stream, strings.TrimSuffix(s, "\n")) + "\n"
			}
			if err != nil {
				copyDone <- struct{}{}
				return
			}
		}
	}
	go pump(outR, "stdout")
	go pump(errR, "stderr")
	go func() {
		for n := 0; n < 2; {
			select {
			case l := <-lines:
				_, _ = logFile.WriteString(l)
			case <-copyDone:
				n++
			}
		}
		for {
			select {
			case l := <-lines:
				_, _ = logFile.WriteString(l)
			default:
				logFile.Close()
				return
			}
		}
	}()
	go func() {
		err := cmd.Wait()
		_ = os.Remove(pidFile)
		info := exitInfo{}
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
				info.signal = int32(ws.Signal())
				info.code = 128 + int32(ws.Signal())
			} else {
				info.code = int32(ee.ExitCode())
			}
		} else if err != nil {
			info.code, info.err = 128, err
		}
		// The group may still hold children of a shell entrypoint; a container's exit ends them.
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		exited(info)
	}()
	return &process{cmd: cmd, pgid: pgid}, nil
}

func (p *process) signal(sig syscall.Signal) {
	_ = syscall.Kill(-p.pgid, sig)
}

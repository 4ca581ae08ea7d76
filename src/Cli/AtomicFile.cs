namespace AttributionFleet.Cli;

/// <summary>
/// An output file (--out, --html) that is never half-written: the text goes to a temporary file beside the target,
/// which replaces the target (rename, atomic on one file system) only on <see cref="Commit"/>. Disposed without a
/// commit, the temporary file is deleted, so a failed run leaves an existing target untouched and creates no new file.
/// A target that exists and is not a regular file (/dev/stdout, /dev/full, a FIFO) is written directly: there is
/// nothing to rename over, and a write error there is still reported, never a hang.
/// </summary>
public sealed class AtomicFile : IDisposable
{
    private readonly string _option;
    private readonly string? _temp;
    private bool _committed;

    public string Path { get; }
    public StreamWriter Writer { get; }

    private AtomicFile(string path, string option)
    {
        Path = path;
        _option = option;
        var full = System.IO.Path.GetFullPath(path);
        var dir = System.IO.Path.GetDirectoryName(full) ?? ".";
        if (Directory.Exists(full)) throw new UsageException($"{option} {path}: is a directory");
        bool special = IsSpecialFile(full);
        if (!special && !Directory.Exists(dir)) throw new UsageException($"{option} {path}: directory {dir} does not exist");
        try
        {
            if (special)
            {
                Writer = new StreamWriter(new FileStream(full, FileMode.Open, FileAccess.Write, FileShare.ReadWrite));
            }
            else
            {
                _temp = System.IO.Path.Combine(dir, $".{System.IO.Path.GetFileName(full)}.{Environment.ProcessId}.{Guid.NewGuid():N}.tmp");
                Writer = new StreamWriter(new FileStream(_temp, FileMode.CreateNew, FileAccess.Write, FileShare.None));
            }
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new UsageException($"{option} {path}: cannot write here ({OneLine(e)})");
        }
    }

    /// <summary>Opens the target for writing; a missing or unwritable directory is a usage error (exit 2) before any work.</summary>
    public static AtomicFile Create(string path, string option) => new(path, option);

    /// <summary>Writes the whole text and commits it.</summary>
    public static void WriteAllText(string path, string option, string text)
    {
        using var file = Create(path, option);
        file.Write(() => file.Writer.Write(text));
        file.Commit();
    }

    /// <summary>Runs a write, turning an I/O failure (disk full, /dev/full) into one line naming the file.</summary>
    public void Write(Action write)
    {
        try
        {
            write();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new OutputFileException($"{_option} {Path}: write failed ({OneLine(e)})");
        }
    }

    /// <summary>Async form of <see cref="Write(Action)"/>.</summary>
    public async Task WriteAsync(Func<Task> write)
    {
        try
        {
            await write();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new OutputFileException($"{_option} {Path}: write failed ({OneLine(e)})");
        }
    }

    /// <summary>Flushes to disk and renames the temporary file over the target (or over <paramref name="target"/>).</summary>
    public void Commit(string? target = null)
    {
        Write(() =>
        {
            Writer.Flush();
            if (Writer.BaseStream is FileStream fs && _temp is not null) fs.Flush(flushToDisk: true);
            Writer.Dispose();
            if (_temp is not null) File.Move(_temp, System.IO.Path.GetFullPath(target ?? Path), overwrite: true);
        });
        _committed = true;
    }

    public void Dispose()
    {
        if (_committed) return;
        try
        {
            Writer.Dispose();
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // The write already failed (e.g. disk full); the temporary file goes below, the target stays as it was.
        }
        if (_temp is not null)
        {
            try
            {
                File.Delete(_temp);
            }
            catch (Exception e) when (e is IOException or UnauthorizedAccessException)
            {
                // Nothing more to do: the target is untouched either way.
            }
        }
    }

    /// <summary>
    /// .NET reports no file type on Unix, so a target counts as special when it exists under /dev or /proc (after
    /// following links: /dev/stdout, /dev/full, /proc/self/fd/1). Those are never renamed over.
    /// </summary>
    private static bool IsSpecialFile(string full)
    {
        if (!File.Exists(full)) return false;
        string resolved = full;
        try
        {
            resolved = File.ResolveLinkTarget(full, returnFinalTarget: true)?.FullName ?? full;
        }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            // A link we cannot follow: judge by its own path.
        }
        return new[] { full, resolved }.Any(p => p.StartsWith("/dev/", StringComparison.Ordinal) || p.StartsWith("/proc/", StringComparison.Ordinal));
    }

    private static string OneLine(Exception e) => e.Message.ReplaceLineEndings(" ").Trim();
}

/// <summary>Writing an output file failed mid-run (disk full …): one line, exit 1; the target is left as it was.</summary>
public sealed class OutputFileException(string message) : Exception(message);

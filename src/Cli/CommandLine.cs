namespace AttributionFleet.Cli;

/// <summary>A command-line error: printed without a stack trace, exit code 2.</summary>
public sealed class UsageException(string message) : Exception(message);

/// <summary>
/// The parsing of the pass-through commands (bench, train-head: see FleetCli.PassThrough), which read their own
/// arguments; every other command is parsed by System.CommandLine (src/Cli/Parsing).
/// Minimal GNU-style parsing: <c>--name value</c>, <c>--name=value</c>, boolean <c>--flag</c>, and positionals.
/// Each command declares which options take values and which are flags; anything else is an error.
/// </summary>
public sealed class CommandLine
{
    private readonly Dictionary<string, List<string>> _values = new();
    private readonly HashSet<string> _flags = new();
    public List<string> Positionals { get; } = new();

    public CommandLine(IEnumerable<string> args, IReadOnlyCollection<string> valueOptions, IReadOnlyCollection<string> flagOptions)
    {
        var list = args.ToList();
        for (int i = 0; i < list.Count; i++)
        {
            var a = list[i];
            if (a == "--")
            {
                Positionals.AddRange(list.Skip(i + 1));
                break;
            }
            if (!a.StartsWith("--", StringComparison.Ordinal) || a.Length == 2)
            {
                Positionals.Add(a);
                continue;
            }
            var name = a[2..];
            string? inline = null;
            int eq = name.IndexOf('=');
            if (eq >= 0)
            {
                inline = name[(eq + 1)..];
                name = name[..eq];
            }
            if (flagOptions.Contains(name))
            {
                if (inline is not null) throw new UsageException($"--{name} takes no value");
                _flags.Add(name);
            }
            else if (valueOptions.Contains(name))
            {
                var value = inline ?? (i + 1 < list.Count ? list[++i] : throw new UsageException($"--{name} needs a value"));
                if (!_values.TryGetValue(name, out var values)) _values[name] = values = new List<string>();
                values.Add(value);
            }
            else
            {
                throw new UsageException($"unknown option --{name}; options: {string.Join(" ", valueOptions.Concat(flagOptions).Select(o => "--" + o))}");
            }
        }
    }

    public bool Flag(string name) => _flags.Contains(name);

    public string? Value(string name) => _values.TryGetValue(name, out var v) ? v[^1] : null;

    public IReadOnlyList<string> Values(string name) => _values.TryGetValue(name, out var v) ? v : Array.Empty<string>();

    public string Required(string name) => Value(name) ?? throw new UsageException($"--{name} is required");

    public int Int(string name, int fallback)
    {
        var v = Value(name);
        if (v is null) return fallback;
        return int.TryParse(v, out var i) ? i : throw new UsageException($"--{name} must be an integer, got '{v}'");
    }
}

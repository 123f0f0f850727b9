using System.Net;
using System.Text.Json;
using System.Text.Json.Serialization;
using Marketplace.Client;
using Marketplace.Grains;
using Marketplace.Silo.Apis;
using Marketplace.Silo.Database;
using Marketplace.Silo.FrontDoor;
using Microsoft.AspNetCore.Diagnostics.HealthChecks;
using Microsoft.AspNetCore.Server.Kestrel.Core;
using Microsoft.Extensions.Options;
using Npgsql;
using OpenTelemetry.Metrics;
using Orleans.Dashboard;
using Orleans.Configuration;
using Serilog;
using ILogger = Microsoft.Extensions.Logging.ILogger;
using Serilog.Events;
using Serilog.Extensions.Logging;
using Serilog.Formatting.Compact;

namespace Marketplace.Silo.Hosting;

/// <summary>
/// One marketplace process: the database (embedded unless a connection string is set), migrations, and by its role
/// (<c>Host:Role</c>) the Orleans silo with the HTTP front door and the dashboard (<c>all</c>), the silo alone (<c>silo</c>),
/// or the front door alone as an Orleans client of the cluster (<c>frontdoor</c>). Tests start several of these in one process.
/// </summary>
public sealed partial class MarketplaceHost : IAsyncDisposable
{
    /// <summary>Name of the connection string (<c>ConnectionStrings:Marketplace</c>).</summary>
    public const string ConnectionStringName = "Marketplace";

    // The meter Orleans publishes its runtime metrics on (OrleansInstruments).
    private const string OrleansMeterName = "Microsoft.Orleans";

    private readonly EmbeddedPostgres? _postgres;
    private readonly Serilog.Core.Logger _logger;

    private MarketplaceHost(WebApplication app, EmbeddedPostgres? postgres, Serilog.Core.Logger logger, string connectionString, string role)
    {
        App = app;
        _postgres = postgres;
        _logger = logger;
        ConnectionString = connectionString;
        Role = role;
    }

    /// <summary>The running web application (front door, silo, dashboard, as the role has them).</summary>
    public WebApplication App { get; }

    /// <summary>What this process runs: <c>all</c>, <c>silo</c> or <c>frontdoor</c>.</summary>
    public string Role { get; }

    /// <summary>The database this host uses.</summary>
    public string ConnectionString { get; }

    /// <summary>The first HTTP address the front door listens on.</summary>
    public Uri BaseAddress => new(App.Urls.First());

    /// <summary>Grain access for in-process callers and tests (the silo's, or the front door's cluster client).</summary>
    public IGrainFactory Grains => App.Services.GetRequiredService<IGrainFactory>();

    /// <summary>Starts the database (when embedded), applies migrations, then starts what the role runs: silo, front door or both.</summary>
    public static async Task<MarketplaceHost> StartAsync(string[] args, Action<WebApplicationBuilder>? configure = null, CancellationToken cancellationToken = default)
    {
        // Settings ship next to the binary, so the host runs the same from any working directory;
        // relative data paths (the embedded database) still resolve against the working directory.
        var builder = WebApplication.CreateBuilder(new WebApplicationOptions { Args = args, ContentRootPath = AppContext.BaseDirectory });
        configure?.Invoke(builder);

        var marketplace = builder.Configuration.GetSection(MarketplaceOptions.Section).Get<MarketplaceOptions>() ?? new MarketplaceOptions();
        var logger = CreateLogger(builder.Configuration, marketplace.LogFormat);
        using var bootLoggers = new SerilogLoggerFactory(logger);
        var boot = bootLoggers.CreateLogger<MarketplaceHost>();
        EmbeddedPostgres? postgres = null;
        WebApplication? app = null;
        try
        {
            var role = builder.Configuration.GetSection(HostRoleOptions.Section).Get<HostRoleOptions>() ?? new HostRoleOptions();
            var roleProblems = role.Validate().ToList();
            if (roleProblems.Count > 0)
            {
                throw new OptionsValidationException(HostRoleOptions.Section, typeof(HostRoleOptions), roleProblems);
            }

            var siloOptions = builder.Configuration.GetSection(SiloHostOptions.Section).Get<SiloHostOptions>() ?? new SiloHostOptions();
            var metricsOptions = builder.Configuration.GetSection(MetricsOptions.Section).Get<MetricsOptions>() ?? new MetricsOptions();
            var problems = siloOptions.Validate().ToList();
            if (problems.Count > 0)
            {
                throw new OptionsValidationException(SiloHostOptions.Section, typeof(SiloHostOptions), problems);
            }

            var connectionString = builder.Configuration.GetConnectionString(ConnectionStringName);
            if (string.IsNullOrWhiteSpace(connectionString))
            {
                var embedded = builder.Configuration.GetSection("Database:Embedded").Get<EmbeddedPostgresOptions>() ?? new EmbeddedPostgresOptions();
                postgres = new EmbeddedPostgres(embedded, bootLoggers.CreateLogger<EmbeddedPostgres>());
                await postgres.StartAsync(cancellationToken);
                connectionString = postgres.ConnectionString;
            }
            else
            {
                ValidateConnectionString(connectionString);
            }

            await new MigrationRunner(connectionString, bootLoggers.CreateLogger<MigrationRunner>()).ApplyAsync(cancellationToken);

            builder.Services.AddSerilog(logger, dispose: false);
            if (role.RunsSilo)
            {
                AddMarketplaceSilo(builder, siloOptions, connectionString);
            }
            else
            {
                AddMarketplaceClusterClient(builder, siloOptions, connectionString);
            }

            AddMarketplaceNode(builder, connectionString);
            if (role.RunsFrontDoor)
            {
                AddMarketplaceFrontDoor(builder);
            }

            AddMarketplaceMetrics(builder, metricsOptions);

            app = builder.Build();
            MapMarketplace(app, role, siloOptions, metricsOptions);
            await app.StartAsync(cancellationToken);
            if (role.RunsSilo)
            {
                LogStarted(boot, role.Normalized, string.Join(", ", app.Urls), siloOptions.SiloPort, siloOptions.GatewayPort);
            }
            else
            {
                LogStartedFrontDoor(boot, string.Join(", ", app.Urls), siloOptions.ClusterId);
            }

            return new MarketplaceHost(app, postgres, logger, connectionString, role.Normalized);
        }
        catch (OperationCanceledException) when (app is not null && app.Lifetime.ApplicationStopping.IsCancellationRequested
            && !cancellationToken.IsCancellationRequested)
        {
            // SIGTERM or Ctrl+C while starting, e.g. while a front door waits for its first silo: a stop, not a failure.
            LogStoppedWhileStarting(boot);
            await app.DisposeAsync();
            await CleanUpFailedStartAsync(postgres, logger);
            throw new StoppedWhileStartingException();
        }
        catch (Exception exception)
        {
            LogStartFailed(boot, exception);
            await CleanUpFailedStartAsync(postgres, logger);
            throw;
        }
    }

    private static async Task CleanUpFailedStartAsync(EmbeddedPostgres? postgres, Serilog.Core.Logger logger)
    {
        if (postgres is not null)
        {
            await postgres.DisposeAsync();
        }

        await logger.DisposeAsync();
    }

    /// <summary>Waits until the process is asked to stop (Ctrl+C, SIGTERM).</summary>
    public Task WaitForShutdownAsync() => App.WaitForShutdownAsync();

    /// <summary>
    /// Stops in reverse order of start: the HTTP server stops accepting and finishes the requests in flight, the call-log
    /// writer and the settlement batcher send what they hold, then the silo deactivates its grains (which write their state)
    /// or the cluster client disconnects; then the embedded database.
    /// </summary>
    public async ValueTask DisposeAsync()
    {
        try
        {
            // WaitForShutdownAsync has already stopped the host on SIGTERM; a second stop would close the cluster client twice.
            if (!App.Lifetime.ApplicationStopped.IsCancellationRequested)
            {
                await App.StopAsync();
            }
        }
        finally
        {
            await App.DisposeAsync();

            // Idle pooled connections (the Orleans providers' and ours share this connection string) would otherwise stay
            // open on the server for minutes after the host is gone.
            await using (var connection = new NpgsqlConnection(ConnectionString))
            {
                NpgsqlConnection.ClearPool(connection);
            }

            if (_postgres is not null)
            {
                await _postgres.DisposeAsync();
            }

            await _logger.DisposeAsync();
        }
    }

    private static void AddMarketplaceSilo(WebApplicationBuilder builder, SiloHostOptions options, string connectionString)
    {
        builder.UseOrleans(silo =>
        {
            silo.Configure<ClusterOptions>(cluster =>
            {
                cluster.ClusterId = options.ClusterId;
                cluster.ServiceId = options.ServiceId;
            });
            silo.ConfigureEndpoints(IPAddress.Parse(options.AdvertisedAddress), options.SiloPort, options.GatewayPort, listenOnAnyHostAddress: false);
            silo.UseAdoNetClustering(clustering =>
            {
                clustering.Invariant = "Npgsql";
                clustering.ConnectionString = connectionString;
            });
            silo.AddAdoNetGrainStorage(StorageNames.Marketplace, storage =>
            {
                storage.Invariant = "Npgsql";
                storage.ConnectionString = connectionString;
            });
            silo.ConfigureMarketplaceMembership();
            silo.ConfigureMarketplaceGrainDirectory(options);
            if (options.Dashboard)
            {
                silo.AddDashboard();
            }
        });
        builder.Services.AddMarketplaceGrains();
        builder.Services.AddHealthChecks().AddCheck<SiloHealthCheck>("silo", tags: ["ready"]);
    }

    // A front door without a silo: an Orleans client of the cluster the silos share (same database, cluster and service
    // id), running the call pipeline here; its grain calls go to the silos through their gateways.
    private static void AddMarketplaceClusterClient(WebApplicationBuilder builder, SiloHostOptions options, string connectionString)
    {
        builder.UseOrleansClient(client => client.UseMarketplaceCluster(
            new MarketplaceClusterSettings(connectionString, options.ClusterId, options.ServiceId)));
        builder.Services.AddMarketplaceCallPipeline();
        builder.Services.AddSingleton<IClusterConnectionStatusObserver, ConnectionDropObserver>();
        builder.Services.AddOptions<AlertOptions>().BindConfiguration(AlertOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        builder.Services.AddHealthChecks().AddCheck<ClusterClientHealthCheck>("cluster", tags: ["ready"]);
    }

    // The journal's statements (one batch: about ten, each with a dozen array parameters) cost PostgreSQL more to parse
    // and plan than to run on a small batch: strict mode measured 600 µs of database CPU per call unprepared. Npgsql
    // prepares statements used twice on a connection, unless the connection string says otherwise.
    /// <summary>The data source every node uses (statements prepared as described above).</summary>
    public static NpgsqlDataSource BuildDataSource(string connectionString)
    {
        var builder = new NpgsqlDataSourceBuilder(connectionString);
        if (!connectionString.Contains("Auto Prepare", StringComparison.OrdinalIgnoreCase))
        {
            builder.ConnectionStringBuilder.MaxAutoPrepare = 64;
            builder.ConnectionStringBuilder.AutoPrepareMinUsages = 2;
        }

        return builder.Build();
    }

    // What every role has: the database, the call log (silos write the rows of internal clients' calls, front doors those
    // of HTTP calls), admin credentials (for /metrics and the dashboard too), problem+json answers, readiness, the demo catalog.
    private static void AddMarketplaceNode(WebApplicationBuilder builder, string connectionString)
    {
        var services = builder.Services;
        services.AddOptions<MarketplaceOptions>().BindConfiguration(MarketplaceOptions.Section).ValidateDataAnnotations().ValidateOnStart();
        services.AddOptions<DemoOptions>().BindConfiguration(DemoOptions.Section);
        services.AddSingleton(_ => BuildDataSource(connectionString));
        services.AddSingleton<AdminAuthentication>();
        services.AddCallLog();
        services.AddHostedService<DemoCatalog>();
        services.AddProblemDetails(problems => problems.CustomizeProblemDetails = context =>
            context.ProblemDetails.Extensions["trackId"] = context.HttpContext.GetTrackId());
        services.AddExceptionHandler<ExceptionProblems>();
        services.AddHealthChecks()
            .AddCheck<DatabaseHealthCheck>("database", tags: ["ready"])
            .AddCheck<BackgroundLoopsHealthCheck>("background-loops", tags: ["ready"]);
        services.AddOptions<KestrelServerOptions>().Configure<IOptions<MarketplaceOptions>>((kestrel, marketplace) =>
        {
            kestrel.Limits.MaxRequestBodySize = marketplace.Value.MaxRequestBodyBytes;
            kestrel.Limits.MaxRequestHeadersTotalSize = marketplace.Value.MaxRequestHeadersBytes;
            kestrel.Limits.MaxRequestLineSize = marketplace.Value.MaxRequestLineBytes;
            kestrel.Limits.RequestHeadersTimeout = marketplace.Value.RequestHeadersTimeout;
            kestrel.AddServerHeader = false;
        });
    }

    private static void AddMarketplaceFrontDoor(WebApplicationBuilder builder)
    {
        var services = builder.Services;
        services.ConfigureHttpJsonOptions(json => json.SerializerOptions.Converters.Add(new StrictEnumConverterFactory()));
        services.AddSingleton<AuditLog>();

        // Pass-through answers stream to HTTP callers through YARP's forwarder.
        services.AddHttpForwarder();
        services.AddSingleton<CallerConnections>();
    }

    private static void AddMarketplaceMetrics(WebApplicationBuilder builder, MetricsOptions options)
    {
        if (!options.Enabled)
        {
            return;
        }

        builder.Services.AddOpenTelemetry().WithMetrics(metrics => metrics
            .AddMeter(MarketplaceMetrics.MeterName, OrleansMeterName)
            .AddPrometheusExporter());
    }

    private static void MapMarketplace(WebApplication app, HostRoleOptions role, SiloHostOptions options, MetricsOptions metrics)
    {
        app.UseTrackIds();
        app.UseJsonCharsetCheck();
        app.UseExceptionHandler();
        app.UseStatusCodePages();

        app.MapGet("/health/live", () => TypedResults.Ok(new { status = "live" })).WithTags("Health");
        app.MapHealthChecks("/health/ready", new HealthCheckOptions { Predicate = check => check.Tags.Contains("ready") });

        if (role.RunsFrontDoor)
        {
            MapFrontDoor(app);
        }

        if (role.RunsSilo && options.Dashboard)
        {
            app.MapOrleansDashboard("/dashboard").AddEndpointFilter<AdminAuthentication>();
        }

        if (metrics.Enabled)
        {
            // Created now rather than on the first call, so its gauges are scraped from the start.
            _ = app.Services.GetRequiredService<MarketplaceMetrics>();
            app.MapPrometheusScrapingEndpoint("/metrics").AddEndpointFilter<IEndpointConventionBuilder, AdminAuthentication>();
        }
    }

    private static void MapFrontDoor(WebApplication app)
    {
        app.MapCallApi();
        app.MapTokensApi();
        app.MapConsumerKeysApi();
        app.MapProviderServicesApi();
        app.MapConsumerCallsApi();
        app.MapConsumerAlertsApi();
        app.MapConsumerReportsApi();
        app.MapProviderReportsApi();
        var admin = app.MapGroup("/admin").AddEndpointFilter<AdminAuthentication>();
        admin.MapAdminCallsApi();
        admin.MapProvidersApi();
        admin.MapServicesApi();
        admin.MapAccountsApi();
        admin.MapAdminKeysApi();
        admin.MapAdminReportsApi();
    }

    private static Serilog.Core.Logger CreateLogger(IConfiguration configuration, string format)
    {
        var config = new LoggerConfiguration()
            .MinimumLevel.Information()
            .MinimumLevel.Override("Microsoft", LogEventLevel.Warning)
            .MinimumLevel.Override("Microsoft.Hosting.Lifetime", LogEventLevel.Information)
            .MinimumLevel.Override("Orleans", LogEventLevel.Warning)
            .MinimumLevel.Override("Polly", LogEventLevel.Warning)
            // The pipeline logs each upstream fault once with its TrackId; the forwarder's own lines would repeat them.
            .MinimumLevel.Override("Yarp", LogEventLevel.Error)
            .MinimumLevel.Override("System.Net.Http.HttpClient", LogEventLevel.Warning)
            .ReadFrom.Configuration(configuration)
            .Enrich.FromLogContext()
            .Enrich.With<TrackIdEnricher>();
        return (format == "json"
                ? config.WriteTo.Console(new RenderedCompactJsonFormatter())
                : config.WriteTo.Console(outputTemplate: "[{Timestamp:HH:mm:ss} {Level:u3}] {SourceContext}: {Message:lj} {TrackId}{NewLine}{Exception}"))
            .CreateLogger();
    }

    private static void ValidateConnectionString(string connectionString)
    {
        try
        {
            _ = new NpgsqlConnectionStringBuilder(connectionString);
        }
        catch (ArgumentException exception)
        {
            // Never echo the connection string: it may hold a password.
            throw new OptionsValidationException("ConnectionStrings", typeof(string),
                [$"ConnectionStrings:{ConnectionStringName} is not a valid PostgreSQL connection string: {exception.Message}"]);
        }
    }

    [LoggerMessage(Level = LogLevel.Information, Message = "Marketplace ({Role}) listening on {Urls} (silo port {SiloPort}, gateway port {GatewayPort})")]
    private static partial void LogStarted(ILogger logger, string role, string urls, int siloPort, int gatewayPort);

    [LoggerMessage(Level = LogLevel.Information, Message = "Marketplace front door listening on {Urls}, connected to cluster {ClusterId}")]
    private static partial void LogStartedFrontDoor(ILogger logger, string urls, string clusterId);

    [LoggerMessage(Level = LogLevel.Information, Message = "Marketplace was asked to stop before its start completed")]
    private static partial void LogStoppedWhileStarting(ILogger logger);

    [LoggerMessage(Level = LogLevel.Critical, Message = "Marketplace failed to start")]
    private static partial void LogStartFailed(ILogger logger, Exception exception);
}

/// <summary>The host was asked to stop (SIGTERM, Ctrl+C) before its start completed; nothing failed.</summary>
public sealed class StoppedWhileStartingException() : OperationCanceledException("The marketplace was asked to stop before its start completed.");
